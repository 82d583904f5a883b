//! Webhook subscriptions (R-EVENTS, delivery side): replicated per root with a delivery
//! cursor that only moves forward, starting after the events emitted before the subscription.

use purser_core::*;

use crate::common::*;

const URL: &str = "http://127.0.0.1:9000/hooks/purser";
const SECRET: &str = "0123456789abcdef";

fn add_op(root: u64, kinds: &[&str]) -> Op {
    Op::AddWebhook {
        root: root.into(),
        url: URL.into(),
        secret: SECRET.into(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
    }
}

fn added(w: &mut World, op: Op) -> u64 {
    match w.ok(op).outcome {
        Outcome::WebhookAdded { webhook_id } => webhook_id,
        other => panic!("expected WebhookAdded, got {other:?}"),
    }
}

fn delivered(w: &mut World, id: u64, through_index: u64) -> Result<Applied> {
    let op = Op::WebhookDelivered { id, through_index };
    w.s.apply(
        w.now,
        Command {
            request: None,
            actor: None,
            op,
        },
    )
}

#[test]
fn a_subscription_starts_after_the_events_emitted_before_it() {
    let mut w = World::new(t(2026, 3, 10, 9));
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let dev = w.child(acme, "dev");
    assert_eq!(w.s.events_emitted(), 0);
    let (_, events) = w.charge(dev, "usd", 5);
    assert!(!events.is_empty());
    let before = w.s.events_emitted();
    assert_eq!(before, events.len() as u64);

    let id = added(
        &mut w,
        add_op(acme, &["usage", "governance.threshold_crossed"]),
    );
    let view = w.s.webhook(id).expect("listed");
    assert_eq!(
        view,
        WebhookView {
            id,
            root: acme,
            url: URL.into(),
            secret: SECRET.into(),
            kinds: vec!["usage".into(), "governance.threshold_crossed".into()],
            delivered_through: before,
        }
    );
    assert_eq!(w.s.webhooks_of(acme), vec![view]);
    assert_eq!(w.s.root_of_node(dev), Some(acme));
    // Adding emits no event; the next charge's events come after the cursor.
    assert_eq!(w.s.events_emitted(), before);
    let (_, more) = w.charge(dev, "usd", 1);
    assert_eq!(w.s.events_emitted(), before + more.len() as u64);
    w.s.check_invariants().expect("invariants");
}

#[test]
fn the_cursor_only_moves_forward_and_is_a_system_command() {
    let mut w = World::new(t(2026, 3, 10, 9));
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let id = added(&mut w, add_op(acme, &["governance"]));
    let applied = delivered(&mut w, id, 10).expect("advances");
    assert_eq!(applied.outcome, Outcome::Done);
    assert!(applied.events.is_empty());
    assert_eq!(w.s.webhook(id).expect("kept").delivered_through, 10);
    // A deposed leader's late, lower cursor is a no-op, not an error.
    let digest = w.s.digest();
    delivered(&mut w, id, 7).expect("a lower cursor is harmless");
    assert_eq!(w.s.webhook(id).expect("kept").delivered_through, 10);
    assert_eq!(w.s.digest(), digest);
    delivered(&mut w, id, 12).expect("advances");
    assert_eq!(w.s.webhook(id).expect("kept").delivered_through, 12);
    // A client cannot send it (it takes no request id), and an unknown webhook is named.
    let e = w.err(Op::WebhookDelivered {
        id,
        through_index: 99,
    });
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("system command"), "{e}");
    let e = delivered(&mut w, id + 1, 1).expect_err("unknown");
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[test]
fn subscriptions_are_per_root_bounded_removable_and_survive_a_snapshot() {
    let mut w = World::new(t(2026, 3, 10, 9));
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let beta = w.root("beta", &[currency("usd", 0, false)]);
    let dev = w.child(acme, "dev");
    let ids: Vec<u64> = (0..limits::WEBHOOKS_PER_ROOT_MAX)
        .map(|_| added(&mut w, add_op(acme, &["usage"])))
        .collect();
    assert_eq!(ids, (1..=16).collect::<Vec<u64>>());
    let e = w.err(add_op(acme, &["usage"]));
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    assert!(e.message.contains("at most 16 webhooks"), "{e}");
    // Another root has its own budget of subscriptions; a child node has none.
    let other = added(&mut w, add_op(beta, &["balance"]));
    let e = w.err(add_op(dev, &["usage"]));
    assert!(e.message.contains("root"), "{e}");

    delivered(&mut w, ids[3], 5).expect("advances");
    let restored = State::restore(&w.s.snapshot()).expect("restores");
    assert_eq!(restored.digest(), w.s.digest());
    assert_eq!(restored.webhooks(), w.s.webhooks());
    assert_eq!(restored.events_emitted(), w.s.events_emitted());

    // Removing frees a slot; ids are never reused; removing twice is NotFound.
    w.done(Op::RemoveWebhook { id: ids[0] });
    let e = w.err(Op::RemoveWebhook { id: ids[0] });
    assert_eq!(e.kind, ErrorKind::NotFound);
    let next = added(&mut w, add_op(acme, &["usage"]));
    assert_eq!(next, other + 1);
    assert_eq!(w.s.webhooks_of(acme).len(), limits::WEBHOOKS_PER_ROOT_MAX);
    assert_eq!(w.s.webhooks_of(beta).len(), 1);
    w.s.check_invariants().expect("invariants");
}

#[test]
fn an_add_retried_with_its_request_id_answers_the_same_webhook() {
    let mut w = World::new(t(2026, 3, 10, 9));
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let command = Command::new("add-hook", w.now, add_op(acme, &["usage"]));
    let first = w.s.apply(w.now, command.clone()).expect("added").outcome;
    let again = w.s.apply(w.now, command).expect("duplicate").outcome;
    assert_eq!(first, Outcome::WebhookAdded { webhook_id: 1 });
    assert_eq!(
        again,
        Outcome::Duplicate(Recorded::WebhookAdded { webhook_id: 1 })
    );
    assert_eq!(w.s.webhooks().len(), 1);
}

#[test]
fn invalid_subscriptions_say_what_is_wrong() {
    let mut w = World::new(t(2026, 3, 10, 9));
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let with = |url: &str, secret: &str, kinds: &[&str]| Op::AddWebhook {
        root: acme.into(),
        url: url.into(),
        secret: secret.into(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
    };
    let too_long_secret = "s".repeat(257);
    let too_long_url = format!("http://h:1/{}", "p".repeat(2048));
    for (op, says) in [
        (
            with("ftp://h:21/x", SECRET, &["usage"]),
            "or https://host:port/path",
        ),
        (with("http://h/x", SECRET, &["usage"]), "explicit port"),
        (with(&too_long_url, SECRET, &["usage"]), "longer than"),
        (with(URL, "short", &["usage"]), "16..=256 bytes"),
        (with(URL, &too_long_secret, &["usage"]), "16..=256 bytes"),
        (with(URL, SECRET, &[]), "1..=16 event kinds"),
        (with(URL, SECRET, &["usage", "usage"]), "given twice"),
        (
            with(URL, SECRET, &["governance.nope"]),
            "unknown event kind",
        ),
        (with(URL, SECRET, &["spend"]), "unknown event kind"),
    ] {
        let e = w.err(op);
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        assert!(
            e.message.contains(says),
            "{:?} does not say {says:?}",
            e.message
        );
    }
    // Every kind Watch knows is accepted.
    let mut all: Vec<String> = webhook::EVENT_STREAMS
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(
        webhook::GOVERNANCE_KINDS
            .iter()
            .map(|k| format!("governance.{k}")),
    );
    assert_eq!(all.len(), 15);
    let kinds: Vec<&str> = all.iter().map(String::as_str).collect();
    added(&mut w, with(URL, SECRET, &kinds));
}

#[test]
fn a_secret_never_shows_in_debug_output() {
    let mut w = World::new(t(2026, 3, 10, 9));
    let acme = w.root("acme", &[currency("usd", 0, false)]);
    let op = add_op(acme, &["usage"]);
    assert!(!format!("{op:?}").contains(SECRET), "{op:?}");
    let id = added(&mut w, op);
    let view = w.s.webhook(id).expect("listed");
    assert_eq!(
        view.secret.expose(),
        SECRET,
        "the delivering leader signs with it"
    );
    assert!(!format!("{view:?}").contains(SECRET), "{view:?}");
}
