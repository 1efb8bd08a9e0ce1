//! Removing passwords from connection URLs before they reach a message, a log
//! line or `Debug` output.

/// What replaces a password.
const MASK: &str = "***";

/// The URL with every password replaced by `***`, for messages and logs.
///
/// Handles, for any scheme (`postgres://`, `mongodb+srv://`, `scylla://`, ...):
///
/// - the password of the user info, `scheme://user:password@host`, percent-encoded
///   or not, even when it holds an unencoded `@`, `/` or `:`; the user name stays;
/// - lists of hosts, `mongodb://user:password@db1:27017,db2:27017/`;
/// - secret parameters (`password`, `pass`, `passwd`, `pwd`, `sslpassword`, and any
///   name containing `password`, `secret` or `token`; case-insensitive, also
///   percent-encoded) separated by `&` or `;`;
/// - text without a scheme, `user:password@host` or `host=db password=secret`,
///   treated the same way (parameters may then also be separated by spaces).
///
/// It never fails and never panics: a string it cannot read as a URL is still
/// scanned for user info and secret parameters, so a malformed URL is redacted
/// rather than echoed. A password containing an unencoded `?` or `#` ends the user
/// info early and is only partly hidden; such a URL is not valid to any driver.
///
/// ```
/// use opstore_domain::redact::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://app:s3cr%40t@db:5432/ops?sslmode=require&password=x"),
///     "postgres://app:***@db:5432/ops?sslmode=require&password=***"
/// );
/// assert_eq!(redact_url("mongodb://db1,db2/?replicaSet=rs"), "mongodb://db1,db2/?replicaSet=rs");
/// ```
pub fn redact_url(url: &str) -> String {
    let (prefix, rest) = split_scheme(url);
    let mut out = String::with_capacity(url.len());
    out.push_str(prefix);
    // The user info ends at the last `@` before the query or fragment, so a
    // password holding an unencoded `@` or `/` is still hidden whole.
    let head_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (head, tail) = rest.split_at(head_end);
    let scheme_less = prefix.is_empty();
    // Without a scheme, an `@` after a `key=` or a space belongs to a parameter
    // value, not to user info.
    let at = head.rfind('@').filter(|&at| {
        !scheme_less || !head[..at].contains(|c: char| c == '=' || c.is_whitespace())
    });
    let head = match at {
        Some(at) => {
            let (userinfo, hosts) = head.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            hosts
        }
        None => head,
    };
    if scheme_less {
        // Without a scheme the text may be a `key=value` list; scan all of it.
        redact_params(&format!("{head}{tail}"), true, &mut out);
    } else {
        out.push_str(head);
        redact_params(tail, false, &mut out);
    }
    out
}

/// Splits `scheme://` off `url` when it starts with a valid scheme.
fn split_scheme(url: &str) -> (&str, &str) {
    let Some(end) = url.find("://") else {
        return ("", url);
    };
    let scheme = &url[..end];
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if valid {
        url.split_at(end + 3)
    } else {
        ("", url)
    }
}

/// Copies `text` to `out`, replacing the value of every secret `key=value`
/// parameter with the mask. Separators are kept as they were.
fn redact_params(text: &str, spaces_separate: bool, out: &mut String) {
    let is_separator =
        |c: char| matches!(c, '&' | ';' | '#') || (spaces_separate && c.is_ascii_whitespace());
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(is_separator).unwrap_or(rest.len());
        let (param, after) = rest.split_at(end);
        match param.split_once('=') {
            Some((key, _)) if is_secret_key(key) => {
                out.push_str(key);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(param),
        }
        let mut after_chars = after.chars();
        if let Some(separator) = after_chars.next() {
            out.push(separator);
        }
        rest = after_chars.as_str();
    }
}

/// Whether a parameter name names a secret, compared case-insensitively after
/// percent-decoding and without `_` / `-`.
fn is_secret_key(key: &str) -> bool {
    // A query key starts after `?`; the first parameter of a scheme-less text may
    // carry it.
    let key = key.trim_start_matches(['?', '#']);
    let name: String = percent_decode(key)
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    matches!(name.as_str(), "pass" | "pwd" | "passwd")
        || ["password", "secret", "token"]
            .iter()
            .any(|word| name.contains(word))
}

/// Decodes `%XX` escapes; invalid escapes and invalid UTF-8 are kept lossily.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every password in these tests contains this marker.
    const PW: &str = "Zq9x";

    fn assert_hidden(url: &str) -> String {
        let shown = redact_url(url);
        assert!(!shown.contains(PW), "{url} -> {shown}");
        shown
    }

    #[test]
    fn userinfo_password_is_masked_and_the_user_kept() {
        assert_eq!(
            assert_hidden("postgres://app:Zq9x@db:5432/ops?sslmode=require"),
            "postgres://app:***@db:5432/ops?sslmode=require"
        );
        assert_eq!(
            assert_hidden("scylla://ops:Zq9x@node1:9042/jobs"),
            "scylla://ops:***@node1:9042/jobs"
        );
        assert_eq!(
            assert_hidden("postgres://:Zq9x@db/ops"),
            "postgres://:***@db/ops"
        );
    }

    #[test]
    fn percent_encoded_passwords_are_masked() {
        assert_eq!(
            assert_hidden("postgres://app:s3%40Zq9x%2Fpw@db/ops"),
            "postgres://app:***@db/ops"
        );
        assert_eq!(
            assert_hidden("postgres://app@db/ops?pass%77ord=Zq9x"),
            "postgres://app@db/ops?pass%77ord=***"
        );
    }

    #[test]
    fn unencoded_at_slash_and_colon_in_a_password_are_masked_whole() {
        for (url, expected) in [
            (
                "scylla://app:Zq9xp@w@db:9042/ops",
                "scylla://app:***@db:9042/ops",
            ),
            ("postgres://app:Zq9x/p@db/ops", "postgres://app:***@db/ops"),
            ("postgres://app:Zq9x:p=@db/ops", "postgres://app:***@db/ops"),
        ] {
            assert_eq!(assert_hidden(url), expected);
        }
    }

    #[test]
    fn secret_query_parameters_are_masked() {
        assert_eq!(
            assert_hidden(
                "postgres://app@db/ops?password=Zq9x&sslpassword=Zq9x&sslmode=verify-full"
            ),
            "postgres://app@db/ops?password=***&sslpassword=***&sslmode=verify-full"
        );
        for key in [
            "PASSWORD",
            "pass",
            "Pwd",
            "passwd",
            "secret",
            "token",
            "api_token",
            "client-secret",
        ] {
            let shown = assert_hidden(&format!("scheme://h/d?x=1&{key}=Zq9x;y=2"));
            assert!(shown.ends_with(&format!("{key}=***;y=2")), "{shown}");
        }
    }

    #[test]
    fn user_name_without_password_and_plain_urls_are_unchanged() {
        for url in [
            "postgres://app@db/ops",
            "mongodb://h:1/?x=1",
            "mongodb://db1:27017,db2/?replicaSet=rs&passes=3",
            "scylla://localhost/opstore",
            "memory://",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn host_lists_keep_every_host() {
        assert_eq!(
            assert_hidden("mongodb://admin:Zq9x@db1:27017,db2/?replicaSet=rs"),
            "mongodb://admin:***@db1:27017,db2/?replicaSet=rs"
        );
        assert_eq!(
            assert_hidden("mongodb+srv://app:Zq9x@cluster.example/ops?authSource=admin"),
            "mongodb+srv://app:***@cluster.example/ops?authSource=admin"
        );
    }

    #[test]
    fn malformed_and_scheme_less_text_is_redacted_not_echoed() {
        assert_eq!(assert_hidden("app:Zq9x@h"), "app:***@h");
        assert_eq!(
            assert_hidden("host=db user=app password=Zq9x sslmode=require"),
            "host=db user=app password=*** sslmode=require"
        );
        assert_eq!(
            assert_hidden("postgres://app:Zq9x@/ops"),
            "postgres://app:***@/ops"
        );
        assert_eq!(assert_hidden("redis://app:Zq9x@h"), "redis://app:***@h");
        // `://` inside a query is not a scheme.
        assert_eq!(
            assert_hidden("app:Zq9x@h?next=http://x"),
            "app:***@h?next=http://x"
        );
        assert_eq!(assert_hidden("?password=Zq9x"), "?password=***");
        assert_eq!(
            assert_hidden("host=db password=Zq9x@b"),
            "host=db password=***"
        );
        assert_eq!(
            assert_hidden("mongodb://h/?x=1#token=Zq9x"),
            "mongodb://h/?x=1#token=***"
        );
    }

    #[test]
    fn never_panics_on_arbitrary_short_text() {
        let alphabet = ['a', ':', '@', '/', '?', '&', '=', '%', 'é', ' ', '#', ';'];
        let n = alphabet.len();
        for code in 0..n.pow(4) {
            let mut text = String::from("x://");
            let mut c = code;
            for _ in 0..4 {
                text.push(alphabet[c % n]);
                c /= n;
            }
            let _ = redact_url(&text);
            let _ = redact_url(&text[4..]);
        }
        assert_eq!(percent_decode("%é%4"), "%é%4");
    }
}
