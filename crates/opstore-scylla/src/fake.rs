//! A recording fake of the seam: it stores the statements it is given and
//! returns canned rows. It does not imitate a database (no LWT, no TTL).

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::session::{CqlSession, DriverError, RowPage};
use crate::value::{BatchKind, Consistency, CqlValue, Row, Statement};

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub cql: String,
    pub values: Vec<CqlValue>,
    pub consistency: Consistency,
    pub serial: Option<Consistency>,
}

type Script = Vec<(String, VecDeque<Result<Vec<Row>, DriverError>>)>;

#[derive(Debug, Default)]
pub struct FakeSession {
    pub calls: Mutex<Vec<Call>>,
    /// `(substring of the CQL, queued answers)`; the first entry with an answer wins.
    script: Mutex<Script>,
}

pub fn applied_row(ok: bool) -> Row {
    Row::from_pairs(vec![("[applied]", CqlValue::Boolean(ok))])
}

impl FakeSession {
    pub fn answer(&self, pattern: &str, result: Result<Vec<Row>, DriverError>) {
        let mut script = self.script.lock().unwrap();
        match script.iter_mut().find(|(p, _)| p == pattern) {
            Some((_, q)) => q.push_back(result),
            None => script.push((pattern.to_owned(), VecDeque::from([result]))),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn respond(&self, stmt: &Statement, values: &[CqlValue]) -> Result<Vec<Row>, DriverError> {
        self.calls.lock().unwrap().push(Call {
            cql: stmt.cql.clone(),
            values: values.to_vec(),
            consistency: stmt.consistency,
            serial: stmt.serial_consistency,
        });
        let mut script = self.script.lock().unwrap();
        for (pattern, queue) in script.iter_mut() {
            if stmt.cql.contains(pattern.as_str()) {
                if let Some(r) = queue.pop_front() {
                    return r;
                }
            }
        }
        if stmt.serial_consistency.is_some() {
            return Ok(vec![applied_row(true)]);
        }
        Ok(Vec::new())
    }
}

#[async_trait]
impl CqlSession for FakeSession {
    async fn execute(
        &self,
        stmt: &Statement,
        values: &[CqlValue],
    ) -> Result<Vec<Row>, DriverError> {
        self.respond(stmt, values)
    }

    async fn query_page(
        &self,
        stmt: &Statement,
        values: &[CqlValue],
        _state: Option<Vec<u8>>,
    ) -> Result<RowPage, DriverError> {
        Ok(RowPage {
            rows: self.respond(stmt, values)?,
            paging_state: None,
        })
    }

    async fn batch(
        &self,
        _kind: BatchKind,
        _consistency: Consistency,
        _serial: Option<Consistency>,
        statements: &[(Statement, Vec<CqlValue>)],
    ) -> Result<Vec<Row>, DriverError> {
        let mut last = Ok(Vec::new());
        for (s, v) in statements {
            let r = self.respond(s, v);
            if s.cql.contains(" IF ") {
                last = r;
            }
        }
        last
    }

    async fn schema_change(&self, cql: &str) -> Result<(), DriverError> {
        self.respond(&Statement::new(cql, Consistency::All), &[])
            .map(drop)
    }

    async fn await_schema_agreement(&self) -> Result<(), DriverError> {
        self.respond(
            &Statement::new("AWAIT SCHEMA AGREEMENT", Consistency::All),
            &[],
        )
        .map(drop)
    }

    async fn close(&self) {}
}
