//! The product's decisions about names, recipients and sends, written once
//! for both backends: pure functions over what a backend found, unit-tested
//! here. The backends call them at the right point of their transactions
//! (`check_rate`, `check_recipients`, `repeated`); `Verbs` calls the rest.

use anyhow::Result;

use super::{Earlier, NewMessage, Recipients, SendError, SentTo, Written, BROADCASTS_PER_MINUTE};

/// Whether a recipient given as `prefix` may mean the longer `name`: only
/// when the name goes on with a letter (`ali` → `alice`), or with `-` and
/// not merely a number (`rev` → `rev-backend`). Never a numbered sibling:
/// `w1` is not `w10`, `w` is not `w2`, `alice` is not `alice-2` (the name a
/// second monitor takes when `alice` is held). Those are refused with the
/// near matches, so mail never silently reaches a session not meant.
pub fn prefix_reaches(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let rest = if prefix.ends_with('-') {
        rest
    } else {
        rest.strip_prefix('-').unwrap_or(rest)
    };
    rest.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Up to five of `names` close to `name`: one contains the other, or they
/// are at most two edits apart.
pub fn near_names(names: Vec<String>, name: &str) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| n.contains(name) || name.contains(n.as_str()) || edit_distance(n, name) <= 2)
        .take(5)
        .collect()
}

/// Levenshtein distance, for "did you mean" hints on short names.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The next candidate name after `name` is held live: `a` → `a-2`, `a-2` → `a-3`.
pub fn next_candidate(requested: &str, attempt: u32) -> String {
    let (base, start) = match requested.rsplit_once('-') {
        Some((base, n))
            if !base.is_empty() && n.len() <= 2 && n.parse::<u32>().is_ok_and(|n| n >= 2) =>
        {
            (base, n.parse::<u32>().unwrap_or(2))
        }
        _ => (requested, 1),
    };
    let suffix = format!("-{}", start + attempt);
    let keep = crate::identity::MAX_NAME_LEN
        .saturating_sub(suffix.len())
        .min(base.len());
    format!("{}{suffix}", base[..keep].trim_end_matches('-'))
}

/// A broadcast sender's limit: refused at `BROADCASTS_PER_MINUTE` in the
/// last minute.
pub fn check_rate(recent_broadcasts: i64) -> Result<()> {
    if recent_broadcasts >= BROADCASTS_PER_MINUTE {
        return Err(SendError::RateLimited.into());
    }
    Ok(())
}

/// A broadcast needs somebody to hear it.
pub fn check_recipients<T>(recipients: &[T]) -> Result<()> {
    if recipients.is_empty() {
        return Err(SendError::NoRecipients.into());
    }
    Ok(())
}

/// A send repeated with the idempotency key of `earlier` writes nothing
/// again; but a key reused for another recipient, text or thread is a
/// mistake that would silently drop the new message: refused, naming the
/// first.
pub fn same_send(earlier: &Earlier, msg: &NewMessage) -> Result<()> {
    let what = match &msg.to {
        Recipients::One(_) if earlier.kind != "direct" => Some("another kind of send"),
        Recipients::One(rid) if earlier.recipients.iter().map(|(id, _)| id).ne([rid]) => {
            Some("another recipient")
        }
        Recipients::All { .. } if earlier.kind != "broadcast" => Some("another kind of send"),
        Recipients::Queue(_) if earlier.kind != "direct" => Some("another kind of send"),
        _ if earlier.text != msg.text => Some("another text"),
        _ if earlier.in_reply_to.as_deref() != msg.reply_to.map(|p| p.id.as_str()) => {
            Some("another thread")
        }
        _ => None,
    };
    match what {
        Some(what) => Err(SendError::KeyReused {
            key: msg.idempotency_key.unwrap_or_default().to_string(),
            first: earlier.id.clone(),
            what,
        }
        .into()),
        None => Ok(()),
    }
}

/// The outcome of a send whose idempotency key `earlier` used: nothing
/// written, the first message reported, once `same_send` agrees.
pub fn repeated(earlier: Earlier, msg: &NewMessage) -> Result<Written> {
    same_send(&earlier, msg)?;
    Ok(Written {
        id: earlier.id,
        recipients: earlier.recipients,
        duplicate: true,
        online: None,
    })
}

/// How a recipient of a new message is reported: `delivered` when a
/// monitor held its mailbox at send time, else `queued`.
pub fn sent_to(name: String, online: bool) -> SentTo {
    SentTo {
        name,
        status: if online { "delivered" } else { "queued" },
    }
}

/// How a recipient of a repeated send is reported.
pub fn not_resent(name: String) -> SentTo {
    SentTo {
        name,
        status: "duplicate, not resent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Address;

    #[test]
    fn a_prefix_never_reaches_a_numbered_sibling() {
        for (prefix, name) in [
            ("ali", "alice"),
            ("rev", "rev-backend"),
            ("rev-", "rev-backend"),
            ("w1", "w1-docs"),
            ("a", "a-b2"),
        ] {
            assert!(prefix_reaches(prefix, name), "{prefix} → {name}");
        }
        for (prefix, name) in [
            ("w1", "w10"),
            ("w", "w2"),
            ("alice", "alice-2"),
            ("w", "w-10"),
            ("w-", "w-1"),
            ("w", "w-1x"),
            ("bob", "bob"),
            ("bob", "alice"),
            ("rev", "rev-"),
        ] {
            assert!(!prefix_reaches(prefix, name), "{prefix} → {name}");
        }
    }

    #[test]
    fn near_names_are_contained_or_two_edits_away_at_most_five() {
        let names: Vec<String> = ["alice", "alfred", "bob", "alicia", "carol"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(near_names(names.clone(), "alcie"), ["alice", "alicia"]);
        assert_eq!(near_names(names.clone(), "bbo"), ["bob"]);
        assert_eq!(near_names(names.clone(), "ali"), ["alice", "alicia"]);
        assert!(near_names(names, "zzzzzz").is_empty());
        let many: Vec<String> = (0..9).map(|i| format!("bot{i}")).collect();
        assert_eq!(near_names(many, "bot").len(), 5);
    }

    #[test]
    fn candidates_are_flat() {
        assert_eq!(next_candidate("a", 1), "a-2");
        assert_eq!(next_candidate("a-2", 1), "a-3");
    }

    #[test]
    fn a_reused_key_must_mean_the_same_send() {
        let me = Address {
            id: 1,
            name: "bob".into(),
            label: String::new(),
        };
        let earlier = Earlier {
            id: "01FIRST".into(),
            kind: "direct".into(),
            text: "deploy".into(),
            in_reply_to: None,
            recipients: vec![(2, "alice".into())],
        };
        let mut msg = NewMessage::new(&me, Recipients::One(2), "deploy");
        msg.idempotency_key = Some("k1");
        assert!(same_send(&earlier, &msg).is_ok());
        for (to, text, what) in [
            (Recipients::One(3), "deploy", "another recipient"),
            (Recipients::One(2), "rollback", "another text"),
            (
                Recipients::All { project: None },
                "deploy",
                "another kind of send",
            ),
        ] {
            let mut m = NewMessage::new(&me, to, text);
            m.idempotency_key = Some("k1");
            let err = same_send(&earlier, &m).expect_err(what).to_string();
            assert!(
                err.contains("01FIRST") && err.contains(what) && err.contains("'k1'"),
                "{err}"
            );
        }
        assert_eq!(check_rate(BROADCASTS_PER_MINUTE - 1).ok(), Some(()));
        assert!(check_rate(BROADCASTS_PER_MINUTE).is_err());
        assert!(check_recipients::<i64>(&[]).is_err());
    }
}
