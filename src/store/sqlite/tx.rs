//! `Mailbox::transact` for SQLite: one `BEGIN IMMEDIATE` transaction (the
//! write lock up front, so every such transaction runs alone), statements
//! in the shared dialect of `store::tx`.

use std::collections::HashSet;

use anyhow::Result;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Transaction, TransactionBehavior};

use super::SqliteStore;
use crate::store::tx::{sqlite_placeholders, Tx, Val, Values};
use crate::store::Mailbox;

struct SqliteTx<'a> {
    tx: &'a Transaction<'a>,
    store: &'a SqliteStore,
    wake: bool,
}

fn bind(params: &[Val]) -> Vec<Value> {
    params
        .iter()
        .map(|v| match v {
            Val::Null => Value::Null,
            Val::Int(i) => Value::Integer(*i),
            Val::Text(s) => Value::Text(s.clone()),
        })
        .collect()
}

/// A stored value as `Val` (also what `db copy` reads).
pub(in crate::store) fn read_value(v: ValueRef) -> Val {
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::Int(i),
        // Nothing we store is a float; read one as what it counts.
        ValueRef::Real(f) => Val::Int(f as i64),
        ValueRef::Text(t) | ValueRef::Blob(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
    }
}

impl Tx for SqliteTx<'_> {
    fn rows(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Values>> {
        let mut stmt = self.tx.prepare_cached(&sqlite_placeholders(sql))?;
        let n = stmt.column_count();
        let rows = stmt.query_map(rusqlite::params_from_iter(bind(params)), |r| {
            (0..n).map(|i| r.get_ref(i).map(read_value)).collect()
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<Values>>>()?)
    }

    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let mut stmt = self.tx.prepare_cached(&sqlite_placeholders(sql))?;
        let n = stmt.execute(rusqlite::params_from_iter(bind(params)))?;
        // Only a change wakes the monitors (an idle worker's sweep that
        // changed nothing must not wake every monitor once a second).
        self.wake |= n > 0;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    fn wake(&mut self, _ids: &[i64], _everyone: bool) -> Result<()> {
        // One sentinel wakes every monitor of this file.
        self.wake = true;
        Ok(())
    }

    fn online(&mut self, ids: &[i64]) -> Result<HashSet<i64>> {
        self.store.online_of(ids)
    }
}

impl SqliteStore {
    pub(super) fn transact_impl(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let tx = Transaction::new_unchecked(self.conn(), TransactionBehavior::Immediate)?;
        let wake = {
            let mut t = SqliteTx {
                tx: &tx,
                store: self,
                wake: false,
            };
            f(&mut t)?;
            t.wake
        };
        tx.commit()?;
        if wake {
            self.touch();
        }
        Ok(())
    }
}
