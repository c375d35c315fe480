//! `Mailbox::transact` for PostgreSQL: one transaction that first takes the
//! task-and-lease advisory lock (so every such transaction runs alone, on
//! every machine), statements in the shared dialect of `store::tx`, each
//! parameter bound as the type the server inferred for it.

use std::collections::HashSet;

use ::postgres::types::{ToSql, Type};
use ::postgres::Transaction;
use anyhow::{bail, Result};

use super::rows::lock_held_sql;
use super::{mailbox_channel, PostgresStore, GLOBAL_CHANNEL, LOCK_NS, TRAFFIC_CHANNEL};
use crate::store::tx::{Tx, Val, Values};

/// Second key of the lock every task or lease transaction holds.
const TASK_KEY: i32 = -2;

struct PgTx<'a, 'b> {
    tx: &'a mut Transaction<'b>,
}

pub(in crate::store) type Param = Box<dyn ToSql + Sync>;

/// `v` as the type the server inferred for its parameter (also what `db
/// copy` binds).
pub(in crate::store) fn bind_value(ty: &Type, v: &Val) -> Result<Param> {
    Ok(match (ty, v) {
        (&Type::INT8, Val::Int(i)) => Box::new(*i),
        (&Type::INT8, Val::Null) => Box::new(None::<i64>),
        (&Type::INT4, Val::Int(i)) => Box::new(i32::try_from(*i)?),
        (&Type::INT4, Val::Null) => Box::new(None::<i32>),
        (&Type::INT8_ARRAY, _) => bail!("array parameters are not supported"),
        (_, Val::Text(s)) => Box::new(s.clone()),
        (_, Val::Null) => Box::new(None::<String>),
        (t, Val::Int(i)) if *t == Type::TEXT || *t == Type::VARCHAR => Box::new(i.to_string()),
        (t, v) => bail!("cannot bind {v:?} as {t}"),
    })
}

fn read(row: &::postgres::Row, i: usize) -> Result<Val> {
    let ty = row.columns()[i].type_().clone();
    Ok(match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Val::Null, Val::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Val::Null, |v| Val::Int(i64::from(v))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map_or(Val::Null, |v| Val::Int(i64::from(v))),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Val::Null, |v| Val::Int(i64::from(v))),
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Val::Null, Val::Text),
    })
}

impl PgTx<'_, '_> {
    fn params(&mut self, sql: &str, params: &[Val]) -> Result<(::postgres::Statement, Vec<Param>)> {
        let st = self.tx.prepare(sql)?;
        if st.params().len() != params.len() {
            bail!(
                "statement takes {} parameters, given {}",
                st.params().len(),
                params.len()
            );
        }
        let bound = st
            .params()
            .iter()
            .zip(params)
            .map(|(t, v)| bind_value(t, v))
            .collect::<Result<Vec<_>>>()?;
        Ok((st, bound))
    }
}

impl Tx for PgTx<'_, '_> {
    fn rows(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Values>> {
        let (st, bound) = self.params(sql, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref()).collect();
        self.tx
            .query(&st, &refs)?
            .iter()
            .map(|r| (0..r.len()).map(|i| read(r, i)).collect())
            .collect()
    }

    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let (st, bound) = self.params(sql, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref()).collect();
        Ok(self.tx.execute(&st, &refs)?)
    }

    fn wake(&mut self, ids: &[i64], everyone: bool) -> Result<()> {
        self.tx
            .execute("SELECT pg_notify($1, '')", &[&TRAFFIC_CHANNEL])?;
        if everyone {
            self.tx
                .execute("SELECT pg_notify($1, '')", &[&GLOBAL_CHANNEL])?;
        }
        for id in ids {
            self.tx
                .execute("SELECT pg_notify($1, '')", &[&mailbox_channel(*id)])?;
        }
        Ok(())
    }

    fn online(&mut self, ids: &[i64]) -> Result<HashSet<i64>> {
        let sql = format!(
            "SELECT s.id FROM sessions s WHERE s.id = ANY($1) AND s.state = 'online' AND {}",
            lock_held_sql()
        );
        let ids = ids.to_vec();
        self.tx
            .query(sql.as_str(), &[&ids])?
            .iter()
            .map(|r| r.try_get(0).map_err(anyhow::Error::from))
            .collect()
    }
}

impl PostgresStore {
    pub(super) fn transact_impl(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        self.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_NS, &TASK_KEY],
            )?;
            f(&mut PgTx { tx: &mut tx })?;
            tx.commit()?;
            Ok(())
        })
    }
}
