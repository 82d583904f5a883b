//! Webhook subscriptions: per root, which event kinds to POST to which URL, signed with which
//! secret, and how far delivery has got. Delivery itself (HTTP, signatures, retries) is the
//! leader's job in the server; the state only keeps the subscriptions and their replicated
//! cursors, so that a new leader resumes where the old one stopped.
//!
//! Event indices are assigned by the storage as it writes the events apply returns (dense,
//! from 1, in apply order). The state counts the events it has emitted (`events_emitted`), so
//! a new subscription starts exactly after the last event emitted before it.

use serde::{Deserialize, Serialize};

use crate::command::NodeRef;
use crate::error::{Error, Result};
use crate::outcome::{Outcome, WebhookView};
use crate::state::{limits, State};

/// The event kinds a subscription (or a watcher) can name: the four streams, or one governance
/// kind as `governance.<kind>`.
pub const EVENT_STREAMS: [&str; 4] = ["usage", "monetization", "balance", "governance"];

/// The governance kinds, snake case, as they appear after `governance.`.
pub const GOVERNANCE_KINDS: [&str; 11] = [
    "threshold_crossed",
    "soft_limit_exceeded",
    "paused",
    "resumed",
    "window_reset",
    "grant_expired",
    "grant_exhausted",
    "grant_renewed",
    "debt_paid",
    "overrun",
    "hold_expired",
];

/// Whether `kind` is a stream name or `governance.<kind>` of a known governance kind.
pub fn is_event_kind(kind: &str) -> bool {
    EVENT_STREAMS.contains(&kind)
        || kind
            .strip_prefix("governance.")
            .is_some_and(|k| GOVERNANCE_KINDS.contains(&k))
}

/// Whether an event of kind `event_kind` (`usage`, `governance.paused`, ...) matches a
/// subscribed kind: equal, or a stream that contains it (`governance` ⊃ `governance.paused`).
pub fn kind_matches(subscribed: &str, event_kind: &str) -> bool {
    event_kind == subscribed
        || event_kind
            .strip_prefix(subscribed)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// A webhook's signing key. Encoded as the string it is (commands and snapshots are
/// unchanged by the wrapper); `Debug` never shows it, so no log line or panic message does.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The key itself, for signing: the one way to read it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Secret(secret)
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Secret(secret.to_owned())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Webhook {
    pub id: u64,
    pub root: u64,
    pub url: String,
    pub secret: Secret,
    pub kinds: Vec<String>,
    /// Every event with an index at or below this was delivered (or did not match).
    pub delivered_through: u64,
}

impl Webhook {
    fn view(&self) -> WebhookView {
        WebhookView {
            id: self.id,
            root: self.root,
            url: self.url.clone(),
            secret: self.secret.clone(),
            kinds: self.kinds.clone(),
            delivered_through: self.delivered_through,
        }
    }
}

impl State {
    pub(crate) fn add_webhook(
        &mut self,
        root: &NodeRef,
        url: String,
        secret: Secret,
        kinds: Vec<String>,
    ) -> Result<Outcome> {
        let root = self.resolve(root)?;
        if self.node(root).parent != 0 {
            return Err(Error::invalid(
                "webhooks belong to a root node (a tenant): name the root",
            ));
        }
        check_url(&url)?;
        check_secret(secret.expose())?;
        check_kinds(&kinds)?;
        let of_root = self.webhooks.values().filter(|w| w.root == root).count();
        if of_root >= limits::WEBHOOKS_PER_ROOT_MAX {
            return Err(Error::exhausted(format!(
                "a root has at most {} webhooks: remove one first",
                limits::WEBHOOKS_PER_ROOT_MAX
            )));
        }
        if self.webhooks.len() >= limits::WEBHOOKS_MAX {
            return Err(Error::exhausted(format!(
                "the cluster keeps at most {} webhooks",
                limits::WEBHOOKS_MAX
            )));
        }
        let id = self.next_webhook_id;
        self.next_webhook_id += 1;
        let webhook = Webhook {
            id,
            root,
            url,
            secret,
            kinds,
            // Starts after every event emitted so far: a subscription sees what happens next.
            delivered_through: self.events_emitted,
        };
        self.webhooks.insert(id, webhook);
        Ok(Outcome::WebhookAdded { webhook_id: id })
    }

    pub(crate) fn remove_webhook(&mut self, id: u64) -> Result<Outcome> {
        self.webhooks
            .remove(&id)
            .map(|_| Outcome::Done)
            .ok_or_else(|| Error::not_found(format!("webhook {id} does not exist")))
    }

    /// Monotonic: a cursor at or below the current one changes nothing (a late write of a
    /// deposed leader is harmless).
    pub(crate) fn webhook_delivered(&mut self, id: u64, through_index: u64) -> Result<Outcome> {
        let webhook = self
            .webhooks
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("webhook {id} does not exist")))?;
        webhook.delivered_through = webhook.delivered_through.max(through_index);
        Ok(Outcome::Done)
    }

    /// Every subscription, by id (with its secret: the delivering leader signs with it).
    pub fn webhooks(&self) -> Vec<WebhookView> {
        self.webhooks.values().map(Webhook::view).collect()
    }

    /// The subscriptions of one root, by id.
    pub fn webhooks_of(&self, root: u64) -> Vec<WebhookView> {
        self.webhooks
            .values()
            .filter(|w| w.root == root)
            .map(Webhook::view)
            .collect()
    }

    pub fn webhook(&self, id: u64) -> Option<WebhookView> {
        self.webhooks.get(&id).map(Webhook::view)
    }

    /// Events emitted by every command applied so far: the index the storage gave the last of
    /// them (events are numbered from 1 in apply order).
    pub fn events_emitted(&self) -> u64 {
        self.events_emitted
    }

    /// The root of a node, if the node exists.
    pub fn root_of_node(&self, id: u64) -> Option<u64> {
        (id != 0 && id <= self.nodes.len() as u64).then(|| self.node(id).root)
    }

    /// Webhook invariants, for [`State::check_invariants`].
    pub(crate) fn check_webhooks(&self) -> std::result::Result<(), String> {
        let mut per_root = std::collections::BTreeMap::<u64, usize>::new();
        for (id, w) in &self.webhooks {
            if *id != w.id || w.id == 0 || w.id >= self.next_webhook_id {
                return Err(format!("webhook {} is filed under {id}", w.id));
            }
            if w.root == 0 || w.root > self.nodes.len() as u64 || self.node(w.root).parent != 0 {
                return Err(format!("webhook {id} belongs to {} (not a root)", w.root));
            }
            let valid = check_url(&w.url)
                .and_then(|()| check_secret(w.secret.expose()))
                .and_then(|()| check_kinds(&w.kinds));
            if let Err(e) = valid {
                return Err(format!("webhook {id} is invalid: {}", e.message));
            }
            let count = per_root.entry(w.root).or_default();
            *count += 1;
            if *count > limits::WEBHOOKS_PER_ROOT_MAX {
                return Err(format!("root {} has too many webhooks", w.root));
            }
        }
        if self.webhooks.len() > limits::WEBHOOKS_MAX {
            return Err("too many webhooks".into());
        }
        Ok(())
    }
}

/// `http://host:port/path` or `https://host:port/path`: an explicit port, a path (at least
/// `/`), printable ASCII only.
pub(crate) fn check_url(url: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("webhook url {url:?}: {why}")));
    if url.len() > limits::WEBHOOK_URL_BYTES_MAX {
        return bad(&format!(
            "longer than {} bytes",
            limits::WEBHOOK_URL_BYTES_MAX
        ));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("must be printable ASCII without spaces (percent-encode the rest)");
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return bad("must look like http://host:port/path or https://host:port/path");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.is_empty() {
        return bad("needs a path, at least `/` (http://host:port/path)");
    }
    if path.contains('#') {
        return bad("must not carry a fragment (#...)");
    }
    if authority.contains('@') {
        return bad("must not carry credentials (user@host): sign with the secret instead");
    }
    let Some((host, port)) = authority.rsplit_once(':') else {
        return bad("needs an explicit port (http://host:port/path)");
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if !host_ok {
        return bad("the host must be a name, an IPv4 address or a [bracketed] IPv6 address");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => bad("the port must be 1..=65535"),
    }
}

fn check_secret(secret: &str) -> Result<()> {
    let (min, max) = (
        limits::WEBHOOK_SECRET_BYTES_MIN,
        limits::WEBHOOK_SECRET_BYTES_MAX,
    );
    if secret.len() < min || secret.len() > max || secret.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "webhook secret must be {min}..={max} bytes without control characters ({} given)",
            secret.len()
        )));
    }
    Ok(())
}

fn check_kinds(kinds: &[String]) -> Result<()> {
    if kinds.is_empty() || kinds.len() > limits::WEBHOOK_KINDS_MAX {
        return Err(Error::invalid(format!(
            "a webhook subscribes to 1..={} event kinds",
            limits::WEBHOOK_KINDS_MAX
        )));
    }
    for (i, kind) in kinds.iter().enumerate() {
        if !is_event_kind(kind) {
            return Err(Error::invalid(format!(
                "unknown event kind {kind:?}: use usage, monetization, balance, governance or governance.<kind> ({})",
                GOVERNANCE_KINDS.join(", ")
            )));
        }
        if kinds[..i].contains(kind) {
            return Err(Error::invalid(format!(
                "event kind {kind:?} is given twice"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_host_port_and_path() {
        for ok in [
            "http://127.0.0.1:8080/hook",
            "http://hooks.example.com:80/",
            "http://[::1]:9000/a/b?x=1",
            "http://a-b.c:65535/p",
            "https://example.com:443/x",
            "https://[::1]:8443/",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("HTTPS://example.com:443/x", "https://host:port/path"),
            ("https://example.com/x", "explicit port"),
            ("ftp://example.com:21/x", "http://host:port/path"),
            ("http://example.com/x", "explicit port"),
            ("http://example.com:80", "needs a path"),
            ("http://example.com:0/x", "port"),
            ("http://example.com:99999/x", "port"),
            ("http://:80/x", "host"),
            ("http://u:p@example.com:80/x", "credentials"),
            ("http://example.com:80/a b", "printable"),
            ("http://example.com:80/a#b", "fragment"),
        ] {
            let e = check_url(bad).expect_err(bad);
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn kinds_come_from_the_watch_vocabulary() {
        assert!(is_event_kind("governance.threshold_crossed"));
        assert!(is_event_kind("usage"));
        assert!(!is_event_kind("governance."));
        assert!(!is_event_kind("governance.nope"));
        assert!(kind_matches("governance", "governance.paused"));
        assert!(kind_matches("usage", "usage"));
        assert!(!kind_matches("usage", "usagex"));
        assert!(!kind_matches("governance.paused", "governance"));
    }
}
