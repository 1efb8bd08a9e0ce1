//! Which read events are done, so the checkpoint never passes an unfinished one.

use std::collections::VecDeque;

use opstore_domain::ResumeToken;

/// Events in feed order, numbered from 0, until every earlier one is done.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Sequence number of `entries[0]`.
    base: u64,
    entries: VecDeque<Entry>,
}

#[derive(Debug)]
struct Entry {
    token: ResumeToken,
    done: bool,
}

impl Tracker {
    /// Registers the next event read and returns its sequence number.
    pub fn push(&mut self, token: ResumeToken) -> u64 {
        let seq = self.base + self.entries.len() as u64;
        self.entries.push_back(Entry { token, done: false });
        seq
    }

    /// Marks `seq` done. When that completes a prefix, returns the token of the
    /// last event of the prefix (everything up to it is done) and how many
    /// events the prefix had.
    pub fn complete(&mut self, seq: u64) -> Option<(ResumeToken, u64)> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.entries.get_mut(index)?.done = true;
        let mut last = None;
        let mut count = 0;
        while self.entries.front().is_some_and(|e| e.done) {
            last = self.entries.pop_front().map(|e| e.token);
            self.base += 1;
            count += 1;
        }
        last.map(|token| (token, count))
    }

    /// Events read and not yet below the done prefix.
    pub fn in_flight(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> ResumeToken {
        ResumeToken::from_bytes(vec![n])
    }

    #[test]
    fn advances_only_over_a_done_prefix() {
        let mut t = Tracker::default();
        let seqs: Vec<u64> = (0..5).map(|n| t.push(token(n))).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        assert_eq!(t.complete(1), None);
        assert_eq!(t.complete(3), None);
        assert_eq!(t.complete(0), Some((token(1), 2)));
        assert_eq!(t.complete(4), None);
        assert_eq!(t.complete(2), Some((token(4), 3)));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.push(token(5)), 5);
    }

    #[test]
    fn unknown_or_repeated_completions_are_ignored() {
        let mut t = Tracker::default();
        t.push(token(0));
        assert_eq!(t.complete(7), None);
        assert_eq!(t.complete(0), Some((token(0), 1)));
        assert_eq!(t.complete(0), None);
    }
}
