//! The domain verbs that commands and the monitor call, written once over
//! the backends' primitives (`Mailbox`): finding a session, resolving a
//! recipient, claiming a name (else `-2`, `-3`, …), renaming, leaving,
//! sending, finding a message by id prefix. A backend says how its database
//! stores things; what the product decides lives here and in `rules`.

use std::collections::HashSet;

use anyhow::{bail, Result};

use super::rules::{near_names, next_candidate, not_resent, prefix_reaches, sent_to};
use super::{
    Address, Brief, Change, Claim, ClaimRequest, Find, LookupError, Mailbox, Message, NewMessage,
    NotFound, Recipients, SendError, Sent, Session, State, Which, Written,
};

/// The verbs, for every store (`impl<M: Mailbox + ?Sized> Verbs for M`).
pub trait Verbs: Mailbox {
    fn session_by_key(&self, key: &str) -> Result<Option<Session>> {
        self.find(Find::Key(key))
    }
    fn session_by_name(&self, name: &str) -> Result<Option<Session>> {
        self.find(Find::Name(name))
    }
    fn session_by_id(&self, id: i64) -> Result<Option<Session>> {
        self.find(Find::Id(id))
    }

    /// Exact name, else a prefix that reaches exactly one session that has
    /// not left (`rules::prefix_reaches`); else refused, with the near
    /// matches.
    fn resolve(&self, name_or_prefix: &str) -> Result<Session> {
        if let Some(s) = self.session_by_name(name_or_prefix)? {
            if s.state == State::Left {
                return Err(LookupError::Left(s.name).into());
            }
            return Ok(s);
        }
        let mut found = self.sessions_with_prefix(name_or_prefix)?;
        found.retain(|s| prefix_reaches(name_or_prefix, &s.name));
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => {
                let active = self.sessions(false)?.into_iter().map(|s| s.name).collect();
                let near = near_names(active, name_or_prefix);
                let hint = if near.is_empty() {
                    String::new()
                } else {
                    format!("; did you mean: {}?", near.join(", "))
                };
                Err(LookupError::Unknown {
                    name: name_or_prefix.to_string(),
                    hint,
                }
                .into())
            }
            _ => Err(LookupError::Ambiguous {
                prefix: name_or_prefix.to_string(),
                matches: found.into_iter().map(|s| s.name).collect(),
            }
            .into()),
        }
    }

    /// The mailbox named exactly `name` (left ones included), as a send
    /// needs it: cheaper than `session_by_name`.
    fn brief(&self, name: &str) -> Result<Option<Brief>> {
        Ok(self.briefs(Which::Names(name, name))?.pop())
    }

    fn address(&self, name: &str) -> Result<Option<Address>> {
        Ok(self.brief(name)?.map(|b| b.address))
    }

    /// The two ends of a direct send, looked up together: the sender by
    /// exact name (`None` when not registered yet) and the recipient as
    /// `resolve_address` finds it.
    fn send_ends(&self, from: &str, to: &str) -> Result<(Option<Brief>, Address)> {
        let mut sender = None;
        let mut recipient = None;
        for b in self.briefs(Which::Names(from, to))? {
            if b.address.name == from {
                sender = Some(b.clone());
            }
            if b.address.name == to {
                recipient = Some(b);
            }
        }
        Ok((sender, exact_or_resolved(self, to, recipient)?))
    }

    /// `resolve`, as a send needs it.
    fn resolve_address(&self, name_or_prefix: &str) -> Result<Address> {
        let exact = self.brief(name_or_prefix)?;
        exact_or_resolved(self, name_or_prefix, exact)
    }

    /// A mailbox's name and whether it has left (what a monitor checks on
    /// each wake-up).
    fn name_and_left(&self, id: i64) -> Result<Option<(String, bool)>> {
        Ok(self
            .briefs(Which::Id(id))?
            .pop()
            .map(|b| (b.address.name, b.left)))
    }

    /// Take `req.name` (or `name-2`, `-3`, … when a live monitor holds it) for
    /// a monitor; an offline mailbox is taken over, pending mail included.
    fn claim(&self, req: &ClaimRequest) -> Result<Claim> {
        let mut candidate = req.name.to_string();
        for attempt in 1..=1000u32 {
            if let Some(claim) = self.claim_exact(&candidate, req)? {
                return Ok(claim);
            }
            candidate = next_candidate(req.name, attempt);
        }
        bail!("could not find a free name after '{}'", req.name)
    }

    /// Rename in place; pending mail follows. A name another mailbox has
    /// (left ones included: their history keeps it) is refused.
    fn rename(&self, session_id: i64, new_name: &str) -> Result<()> {
        match self.address(new_name)? {
            Some(a) if a.id == session_id => Ok(()),
            Some(_) => bail!("name '{new_name}' is already taken; pick another"),
            None => self.update(session_id, Change::Name(new_name)),
        }
    }

    fn relabel(&self, session_id: i64, label: &str) -> Result<()> {
        self.update(session_id, Change::Label(label))
    }

    /// Mark left; returns the monitor pid if one was running (for the
    /// caller to stop it).
    fn disconnect(&self, session_id: i64) -> Result<Option<i64>> {
        let pid = self.session_by_id(session_id)?.and_then(|s| s.monitor_pid);
        let online = self.is_online(session_id);
        // Its leases die with it (a lease of a left holder is dead anyway:
        // this records when); its tasks go back to their queues now.
        use super::leases::Leases;
        use super::tasks::{told, Tasks};
        self.release_leases(session_id, None, None)?;
        self.update(session_id, Change::Left)?;
        told(self, &self.sweep_all()?);
        Ok(pid.filter(|_| online))
    }

    /// Send: refuses a send to oneself (but a note to self), then the
    /// backend's transaction (`Mailbox::write_message`); each recipient is
    /// reported delivered (a monitor held it) or queued.
    fn send(&self, msg: &NewMessage) -> Result<Sent> {
        if let Recipients::One(rid) = msg.to {
            if rid == msg.sender.id && !msg.note_to_self {
                return Err(SendError::SelfSend(msg.sender.name.clone()).into());
            }
        }
        let mut written = self.write_message(msg)?;
        if written.duplicate {
            return Ok(Sent {
                id: written.id,
                recipients: written
                    .recipients
                    .into_iter()
                    .map(|(_, name)| not_resent(name))
                    .collect(),
                duplicate: true,
            });
        }
        let online = match written.online.take() {
            Some(known) => known,
            None => {
                let ids: Vec<i64> = written.recipients.iter().map(|(id, _)| *id).collect();
                // Asked after the commit; a failure only makes it "queued".
                self.online_of(&ids).unwrap_or_default()
            }
        };
        ring_doors(self, &written, &online);
        Ok(Sent {
            id: written.id,
            recipients: written
                .recipients
                .into_iter()
                .map(|(id, name)| sent_to(name, online.contains(&id)))
                .collect(),
            duplicate: false,
        })
    }

    /// One message by id or unique id prefix (any case), whole text.
    fn message(&self, id_prefix: &str) -> Result<Message> {
        let prefix = id_prefix.to_ascii_uppercase();
        let found = self.messages_from(&prefix)?;
        let mut found = found.into_iter().filter(|m| m.id.starts_with(&prefix));
        match (found.next(), found.next()) {
            (Some(m), None) => Ok(m),
            (None, _) => Err(NotFound(format!("no message with id '{id_prefix}'")).into()),
            (Some(_), Some(_)) => {
                bail!("message id prefix '{id_prefix}' is ambiguous; give more of it")
            }
        }
    }
}

impl<M: Mailbox + ?Sized> Verbs for M {}

/// After the commit: ring the door (`door.rs`) of every recipient on this
/// machine that no live monitor serves, so its host hands the mail over.
/// Best effort; the mail waits whatever happens here.
fn ring_doors<M: Mailbox + ?Sized>(store: &M, written: &Written, online: &HashSet<i64>) {
    let Ok(data) = crate::datadir::path() else {
        return;
    };
    if !crate::door::any(&data) {
        return;
    }
    let here = crate::identity::this_host();
    for (id, _) in written
        .recipients
        .iter()
        .filter(|(id, _)| !online.contains(id))
    {
        if let Ok(Some(s)) = store.find(Find::Id(*id)) {
            if let Some(key) = s.key.filter(|_| s.host == here) {
                crate::door::ring(&data, &key, &written.id);
            }
        }
    }
}

/// The recipient `name_or_prefix` of a send, given its exact-name brief (if
/// any): a prefix or an unknown name goes through `resolve`, which says
/// which it is.
fn exact_or_resolved<M: Mailbox + ?Sized>(
    store: &M,
    name_or_prefix: &str,
    exact: Option<Brief>,
) -> Result<Address> {
    match exact {
        Some(b) if b.left => Err(LookupError::Left(b.address.name).into()),
        Some(b) => Ok(b.address),
        None => Ok(store.resolve(name_or_prefix)?.address()),
    }
}
