//! File leases (SPEC §11), written once for both backends over `tx::Tx`.
//!
//! A lease is a path or glob (`lease_glob::Pattern`, relative to a
//! project's git root) held by one mailbox, exclusive unless shared. It is
//! live until released, until its TTL passes, or until its holder leaves;
//! a dead lease never blocks anybody, so leases die with their holders
//! without anyone cleaning up. Taking one checks every live lease of the
//! project in the same serialised transaction (`Mailbox::transact`), so two
//! sessions racing for overlapping globs are never both granted.

use anyhow::Result;

use super::tx::{Tx, Val, Values};
use super::{now_text, Mailbox};
use crate::lease_glob::Pattern;

/// The default time a lease lasts (`lease take --ttl`).
pub const DEFAULT_TTL_SECS: u64 = 2 * 3600;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Lease {
    pub id: i64,
    pub project: String,
    pub pattern: String,
    pub holder: String,
    #[serde(skip)]
    pub holder_id: i64,
    pub exclusive: bool,
    pub reason: String,
    pub created_at: String,
    pub expires_at: String,
    pub released_at: Option<String>,
    /// Live: not released, not expired, its holder has not left.
    pub live: bool,
}

const LEASE_COLUMNS: &str = "l.id, l.project, l.pattern, s.name, l.holder_id, l.exclusive, \
     l.reason, l.created_at, l.expires_at, l.released_at, s.state";

fn lease(v: &Values, now: &str) -> Result<Lease> {
    let expires_at = v[8].text()?;
    let released_at = v[9].opt_text()?;
    let left = v[10].text()? == "left";
    Ok(Lease {
        id: v[0].int()?,
        project: v[1].text()?,
        pattern: v[2].text()?,
        holder: v[3].text()?,
        holder_id: v[4].int()?,
        exclusive: v[5].int()? != 0,
        reason: v[6].text()?,
        created_at: v[7].text()?,
        live: released_at.is_none() && !left && expires_at.as_str() > now,
        expires_at,
        released_at,
    })
}

/// The live leases of `project` (every project: None).
fn live(tx: &mut dyn Tx, project: Option<&str>) -> Result<Vec<Lease>> {
    let now = now_text();
    let base = format!(
        "SELECT {LEASE_COLUMNS} FROM leases l JOIN sessions s ON s.id = l.holder_id \
         WHERE l.released_at IS NULL AND l.expires_at > $1 AND s.state <> 'left'"
    );
    let found = match project {
        Some(p) => tx.rows(
            &format!("{base} AND l.project = $2 ORDER BY l.id"),
            &[Val::from(&now), Val::from(p)],
        )?,
        None => tx.rows(&format!("{base} ORDER BY l.id"), &[Val::from(&now)])?,
    };
    found.iter().map(|v| lease(v, &now)).collect()
}

/// A lease in the way of one of ours.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The pattern asked for.
    pub wanted: String,
    pub lease: Lease,
}

/// What `take_leases` did.
#[derive(Debug, Clone, Default)]
pub struct TakeOutcome {
    /// Granted (new or renewed), one per pattern asked for.
    pub granted: Vec<Lease>,
    /// In the way: nothing was taken.
    pub conflicts: Vec<Conflict>,
    /// Taken over with `--force` (their holders are to be told).
    pub taken_over: Vec<Lease>,
}

/// What a lease request asks for.
pub struct Request<'a> {
    pub project: &'a str,
    pub patterns: &'a [Pattern],
    pub ttl_secs: u64,
    pub reason: &'a str,
    pub exclusive: bool,
    pub force: bool,
}

fn overlaps(a: &str, b: &Pattern) -> bool {
    Pattern::parse(a).is_ok_and(|a| a.overlaps(b))
}

/// The lease verbs, for every store.
pub trait Leases: Mailbox {
    /// Take (or renew) a lease on each pattern for `me`, all or none: an
    /// exclusive one conflicts with any other live lease it overlaps, a
    /// shared one with overlapping exclusive ones. With `force` the
    /// conflicting leases are released instead (the caller tells their
    /// holders).
    fn take_leases(&self, me: i64, req: &Request) -> Result<TakeOutcome> {
        let mut out = TakeOutcome::default();
        let expires = (chrono::Utc::now()
            + chrono::Duration::seconds(i64::try_from(req.ttl_secs).unwrap_or(i64::MAX / 2)))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
        self.transact(&mut |tx| {
            out = TakeOutcome::default();
            let now = now_text();
            let current = live(tx, Some(req.project))?;
            for p in req.patterns {
                for l in current.iter().filter(|l| l.holder_id != me) {
                    if (l.exclusive || req.exclusive) && overlaps(&l.pattern, p) {
                        out.conflicts.push(Conflict {
                            wanted: p.as_str().to_string(),
                            lease: l.clone(),
                        });
                    }
                }
            }
            if !out.conflicts.is_empty() && !req.force {
                return Ok(());
            }
            for c in std::mem::take(&mut out.conflicts) {
                if out.taken_over.iter().all(|l| l.id != c.lease.id) {
                    tx.exec(
                        "UPDATE leases SET released_at = $2 WHERE id = $1",
                        &[Val::from(c.lease.id), Val::from(&now)],
                    )?;
                    out.taken_over.push(c.lease);
                }
            }
            for p in req.patterns {
                let mine = current
                    .iter()
                    .find(|l| l.holder_id == me && l.pattern == p.as_str());
                let id = match mine {
                    Some(l) => {
                        tx.exec(
                            "UPDATE leases SET expires_at = $2, reason = $3, exclusive = $4 WHERE id = $1",
                            &[
                                Val::from(l.id),
                                Val::from(&expires),
                                Val::from(req.reason),
                                Val::from(i64::from(req.exclusive)),
                            ],
                        )?;
                        l.id
                    }
                    None => tx
                        .row(
                            "INSERT INTO leases (project, pattern, holder_id, exclusive, reason, created_at, expires_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                            &[
                                Val::from(req.project),
                                Val::from(p.as_str()),
                                Val::from(me),
                                Val::from(i64::from(req.exclusive)),
                                Val::from(req.reason),
                                Val::from(&now),
                                Val::from(&expires),
                            ],
                        )?
                        .map(|v| v[0].int())
                        .transpose()?
                        .unwrap_or_default(),
                };
                let now2 = now_text();
                if let Some(v) = tx.row(
                    &format!(
                        "SELECT {LEASE_COLUMNS} FROM leases l JOIN sessions s ON s.id = l.holder_id WHERE l.id = $1"
                    ),
                    &[Val::from(id)],
                )? {
                    out.granted.push(lease(&v, &now2)?);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Release `me`'s live leases of `project` on these patterns (all of
    /// them: None); the released ones.
    fn release_leases(
        &self,
        me: i64,
        project: Option<&str>,
        patterns: Option<&[Pattern]>,
    ) -> Result<Vec<Lease>> {
        let mut out = Vec::new();
        self.transact(&mut |tx| {
            out.clear();
            let now = now_text();
            for l in live(tx, project)?.into_iter().filter(|l| l.holder_id == me) {
                let chosen = patterns.is_none_or(|ps| ps.iter().any(|p| p.as_str() == l.pattern));
                if chosen {
                    tx.exec(
                        "UPDATE leases SET released_at = $2 WHERE id = $1",
                        &[Val::from(l.id), Val::from(&now)],
                    )?;
                    out.push(l);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Leases: the live ones of `project` (every project: None); with
    /// `all`, ended ones too.
    fn leases(&self, project: Option<&str>, all: bool) -> Result<Vec<Lease>> {
        let mut out = Vec::new();
        self.transact(&mut |tx| {
            out = if all {
                let now = now_text();
                let sql = format!(
                    "SELECT {LEASE_COLUMNS} FROM leases l JOIN sessions s ON s.id = l.holder_id"
                );
                let found = match project {
                    Some(p) => tx.rows(
                        &format!("{sql} WHERE l.project = $1 ORDER BY l.id"),
                        &[Val::from(p)],
                    )?,
                    None => tx.rows(&format!("{sql} ORDER BY l.id"), &[])?,
                };
                found
                    .iter()
                    .map(|v| lease(v, &now))
                    .collect::<Result<_>>()?
            } else {
                live(tx, project)?
            };
            Ok(())
        })?;
        Ok(out)
    }

    /// Which of `paths` (files, folders as `dir/**`, or globs, relative to
    /// `project`) touch a live exclusive lease of a session other than `me`.
    fn blocked(
        &self,
        me: Option<i64>,
        project: &str,
        paths: &[String],
    ) -> Result<Vec<(String, Lease)>> {
        let mut current = Vec::new();
        self.transact(&mut |tx| {
            current = live(tx, Some(project))?;
            Ok(())
        })?;
        let mut out = Vec::new();
        for path in paths {
            // A file name no pattern may hold (a control character) is
            // still checked, as the plain path it is.
            let wanted = Pattern::parse(path).ok();
            for l in current
                .iter()
                .filter(|l| l.exclusive && Some(l.holder_id) != me)
            {
                let hit = match &wanted {
                    Some(w) => overlaps(&l.pattern, w),
                    None => Pattern::parse(&l.pattern).is_ok_and(|p| p.matches(path)),
                };
                if hit {
                    out.push((path.clone(), l.clone()));
                }
            }
        }
        Ok(out)
    }
}

impl<M: Mailbox + ?Sized> Leases for M {}
