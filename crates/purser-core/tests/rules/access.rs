//! Tokens and access levels (R-SAFE): what each access level may do within its scope, judged
//! in apply at the command's time, and a refusal that changes nothing.

use purser_core::*;

use crate::common::*;

/// Two tenants, `acme` (with `acme/team/alice`) and `beta`, funded in usd, with a hold open
/// on `acme/team/alice` and on `beta`; tokens over them, created by the first `/` admin.
struct Tenants {
    w: World,
    acme: u64,
    team: u64,
    alice: u64,
    beta: u64,
    acme_hold: u64,
    beta_hold: u64,
    grant: u64,
    cluster_admin: u64,
    acme_admin: u64,
    team_admin: u64,
    team_editor: u64,
    team_viewer: u64,
    beta_admin: u64,
}

fn secret(n: u8) -> SecretHash {
    [n; 32]
}

fn create_token(scope: Option<u64>, access: Access, ttl: Option<u64>, n: u8) -> Op {
    Op::CreateToken {
        scope: scope.map(NodeRef::Id),
        access,
        name: format!("token-{n}"),
        expires_in_ms: ttl,
        secret_hash: secret(n),
    }
}

impl Tenants {
    fn new() -> Tenants {
        let mut w = World::new(t(2026, 5, 1, 9));
        let usd = currency("usd", 0, true);
        let acme = w.root("acme", std::slice::from_ref(&usd));
        let team = w.child(acme, "team");
        let alice = w.child(team, "alice");
        let beta = w.root("beta", &[usd]);
        let acme_grant = match w
            .ok(Op::AddGrant {
                node: acme.into(),
                grant: grant("usd", 1_000, 1),
            })
            .outcome
        {
            Outcome::GrantAdded { grant_id } => grant_id,
            other => panic!("{other:?}"),
        };
        w.ok(Op::AddGrant {
            node: beta.into(),
            grant: grant("usd", 1_000, 1),
        });
        let acme_hold = w.reserve(alice, "usd", 10).reservation_id;
        let beta_hold = w.reserve(beta, "usd", 10).reservation_id;
        let mut tenants = Tenants {
            w,
            acme,
            team,
            alice,
            beta,
            acme_hold,
            beta_hold,
            grant: acme_grant,
            cluster_admin: 0,
            acme_admin: 0,
            team_admin: 0,
            team_editor: 0,
            team_viewer: 0,
            beta_admin: 0,
        };
        // The first token is the bootstrap's: no actor.
        tenants.cluster_admin = tenants.token(None, None, Access::Admin, None, 1);
        let by = Some(tenants.cluster_admin);
        tenants.acme_admin = tenants.token(by, Some(acme), Access::Admin, None, 2);
        tenants.team_admin = tenants.token(by, Some(team), Access::Admin, None, 3);
        tenants.team_editor = tenants.token(by, Some(team), Access::Editor, None, 4);
        tenants.team_viewer = tenants.token(by, Some(team), Access::Viewer, None, 5);
        tenants.beta_admin = tenants.token(by, Some(beta), Access::Admin, None, 6);
        tenants
    }

    #[track_caller]
    fn token(
        &mut self,
        by: Option<u64>,
        scope: Option<u64>,
        access: Access,
        ttl: Option<u64>,
        n: u8,
    ) -> u64 {
        match self.act(by, create_token(scope, access, ttl, n)) {
            Ok(Applied {
                outcome: Outcome::TokenCreated { token_id, .. },
                ..
            }) => token_id,
            other => panic!("{other:?}"),
        }
    }

    fn act(&mut self, actor: Option<u64>, op: Op) -> Result<Applied> {
        let command = self.w.command(op).by(actor);
        self.w.s.apply(self.w.now, command)
    }

    /// `op` by `actor` fails with `kind`, and the state is as it was.
    #[track_caller]
    fn refused(&mut self, actor: u64, op: Op, kind: ErrorKind) -> Error {
        let shown = format!("{op:?}");
        let before = self.w.s.digest();
        let error = match self.act(Some(actor), op) {
            Ok(applied) => panic!("token {actor}: {shown} should be refused, got {applied:?}"),
            Err(e) => e,
        };
        assert_eq!(error.kind, kind, "token {actor}: {shown}: {error}");
        assert_eq!(self.w.s.digest(), before, "a refusal changed the state");
        error
    }

    #[track_caller]
    fn allowed(&mut self, actor: u64, op: Op) -> Applied {
        let shown = format!("{op:?}");
        match self.act(Some(actor), op) {
            Ok(applied) => applied,
            Err(e) => panic!("token {actor}: {shown} should be allowed: {e}"),
        }
    }
}

fn cap(node: u64, amount: u64) -> Op {
    Op::SetLimit {
        node: node.into(),
        limit: hard("usd", amount, Window::Lifetime),
    }
}

fn credit(node: u64) -> Op {
    Op::AddGrant {
        node: node.into(),
        grant: grant("usd", 50, 1),
    }
}

fn charge(node: u64) -> Op {
    Op::Charge(Charge {
        node: node.into(),
        currency: "usd".into(),
        actual: Actual::Amount(1),
        attrs: Attributes::default(),
    })
}

#[test]
fn each_access_level_does_what_it_may_within_its_scope_only() {
    use ErrorKind::PermissionDenied as Denied;
    let mut x = Tenants::new();
    let (acme, team, alice, beta) = (x.acme, x.team, x.alice, x.beta);

    // A viewer reads (members judge reads with the same function) but may not spend.
    assert_eq!(
        x.w.s
            .authorize(x.team_viewer, Need::Node(&alice.into(), Access::Viewer))
            .unwrap(),
        Some(alice)
    );
    x.refused(x.team_viewer, charge(alice), Denied);
    // Nor read outside its scope, by id or by path (a path outside is refused unresolved).
    let outside =
        x.w.s
            .authorize(x.team_viewer, Need::Node(&acme.into(), Access::Viewer))
            .unwrap_err();
    assert_eq!(outside.kind, Denied, "{outside}");
    let unknown_elsewhere =
        x.w.s
            .authorize(
                x.team_viewer,
                Need::Node(&"beta/secret".into(), Access::Viewer),
            )
            .unwrap_err();
    assert_eq!(unknown_elsewhere.kind, Denied, "{unknown_elsewhere}");

    // An editor spends within its scope, not beside it, and configures nothing.
    x.allowed(x.team_editor, charge(alice));
    x.allowed(x.team_editor, charge(team));
    x.refused(x.team_editor, charge(acme), Denied);
    x.refused(x.team_editor, charge(beta), Denied);
    x.refused(x.team_editor, cap(alice, 100), Denied);

    // Reservations named by id are judged by the node they are on.
    x.refused(
        x.team_editor,
        Op::Release {
            reservation_id: x.beta_hold,
        },
        Denied,
    );
    x.refused(
        x.team_editor,
        Op::Settle {
            reservation_id: x.beta_hold,
            actual: Actual::Amount(1),
        },
        Denied,
    );
    let grant_of_acme =
        x.w.s
            .authorize(x.team_viewer, Need::Grant(x.grant, Access::Viewer))
            .unwrap_err();
    assert_eq!(grant_of_acme.kind, Denied);
    x.allowed(
        x.team_editor,
        Op::Release {
            reservation_id: x.acme_hold,
        },
    );

    // An admin configures strictly below its scope node, never the node itself.
    x.allowed(x.team_admin, cap(alice, 100));
    x.allowed(x.team_admin, create_child(team, "bob"));
    let raise = x.refused(x.team_admin, cap(team, 1_000_000), Denied);
    assert!(raise.message.contains("set from above"), "{raise}");
    x.refused(x.team_admin, credit(team), Denied);
    x.refused(x.team_admin, cap(acme, 100), Denied);
    x.allowed(x.acme_admin, cap(team, 500));
    x.allowed(x.acme_admin, credit(team));

    // A tenant's admin reaches nothing of another tenant.
    x.refused(x.beta_admin, cap(alice, 1), Denied);
    x.refused(x.beta_admin, charge(alice), Denied);
    x.refused(
        x.acme_admin,
        Op::Release {
            reservation_id: x.beta_hold,
        },
        Denied,
    );

    // What belongs to the cluster takes scope `/`.
    let root = Op::CreateNode(CreateNode {
        parent: None,
        name: "gamma".into(),
        kind: "tenant".into(),
        tags: vec![],
        root: Some(RootSpec {
            currencies: vec![currency("usd", 0, false)],
            no_default_cap: true,
        }),
    });
    x.refused(x.acme_admin, root.clone(), Denied);
    x.refused(
        x.acme_admin,
        Op::SetPrice {
            root: acme.into(),
            price: PriceSpec {
                provider: "p".into(),
                model: "m".into(),
                currency: "usd".into(),
                input_per_mtok: 0,
                output_per_mtok: 0,
                cached_input_per_mtok: 0,
                reasoning_per_mtok: 0,
            },
        },
        Denied,
    );
    x.refused(x.acme_admin, Op::SetConfig(ConfigPatch::default()), Denied);
    x.allowed(x.cluster_admin, root);
    x.allowed(x.cluster_admin, cap(acme, 10_000));

    // Moving a node needs admin over both the node (strictly below) and the new parent.
    let bob = x.w.s.resolve(&"acme/team/bob".into()).unwrap();
    let move_out = Op::MoveNode {
        node: bob.into(),
        new_parent: beta.into(),
    };
    x.refused(x.team_admin, move_out, Denied);

    // System commands are never a client's.
    x.refused(x.cluster_admin, Op::Tick, ErrorKind::InvalidArgument);
}

#[test]
fn tokens_are_no_wider_than_their_maker_and_stop_when_revoked_or_expired() {
    use ErrorKind::{PermissionDenied as Denied, Unauthenticated};
    let mut x = Tenants::new();
    let (acme, team, alice) = (x.acme, x.team, x.alice);

    // No wider: scope, access and lifetime.
    x.refused(
        x.team_admin,
        create_token(Some(acme), Access::Viewer, None, 20),
        Denied,
    );
    x.refused(
        x.team_editor,
        create_token(Some(alice), Access::Viewer, None, 21),
        Denied,
    );
    x.refused(
        x.team_admin,
        create_token(None, Access::Viewer, None, 22),
        Denied,
    );
    let short = x.token(Some(x.team_admin), Some(team), Access::Admin, Some(MIN), 23);
    x.refused(
        short,
        create_token(Some(alice), Access::Viewer, None, 24),
        Denied,
    );
    x.refused(
        short,
        create_token(Some(alice), Access::Viewer, Some(2 * MIN), 25),
        Denied,
    );
    let child = x.token(Some(short), Some(alice), Access::Editor, Some(MIN / 2), 26);
    let listed = x.w.s.tokens(Some(team));
    let view = listed
        .iter()
        .find(|v| v.id == child)
        .expect("listed under the team");
    assert_eq!(view.scope, "acme/team/alice");
    assert_eq!(view.created_by, Some(short));
    assert!(x.w.s.tokens(Some(x.beta)).iter().all(|v| v.id != child));

    // Without a token, only the first token is made (the bootstrap).
    let again = x.act(None, create_token(None, Access::Admin, None, 40));
    assert_eq!(again.map(|_| ()).unwrap_err().kind, Denied);

    // A secret is one token's.
    x.refused(
        x.cluster_admin,
        create_token(Some(team), Access::Viewer, None, 26),
        ErrorKind::AlreadyExists,
    );

    // Expiry is judged at the command's time.
    x.allowed(child, charge(alice));
    x.w.later(MIN / 2);
    let expired = x.refused(child, charge(alice), Unauthenticated);
    assert!(expired.message.contains("expired"), "{expired}");
    // Members judge a bearer on the replicated clock: the time of the last applied command.
    assert!(x.w.s.token_by_hash(&secret(26)).is_ok());
    x.w.tick();
    assert_eq!(
        x.w.s.token_by_hash(&secret(26)).unwrap_err().kind,
        Unauthenticated
    );

    // Revoking: by an admin over the token's scope only; then the token authorizes nothing.
    x.refused(x.beta_admin, Op::RevokeToken { id: x.team_editor }, Denied);
    x.allowed(x.acme_admin, Op::RevokeToken { id: x.team_editor });
    let revoked = x.refused(x.team_editor, charge(alice), Unauthenticated);
    assert!(revoked.message.contains("revoked"), "{revoked}");
    assert!(x.w.s.token_by_hash(&secret(4)).is_err());
    assert!(x.w.s.token_by_hash(&secret(5)).is_ok());
    let unknown = x.refused(999, charge(alice), Unauthenticated);
    assert!(unknown.message.contains("does not exist"), "{unknown}");
}

#[test]
fn request_ids_are_kept_per_token_and_never_collide_across_tenants() {
    let mut x = Tenants::new();
    let (alice, beta) = (x.alice, x.beta);
    let mine = x.w.command(charge(alice)).by(Some(x.team_editor));
    let id = mine.request.clone().unwrap().id;
    let now = x.w.now;
    x.w.s.apply(now, mine.clone()).unwrap();
    // Another tenant's token uses the same id for its own request: a request of its own.
    let theirs = Command::new(id.clone(), now, charge(beta)).by(Some(x.beta_admin));
    let applied = x.w.s.apply(now, theirs.clone()).unwrap();
    assert!(
        matches!(applied.outcome, Outcome::Charged(_)),
        "{applied:?}"
    );
    // Each retry is recognised within its own token's ids.
    for retry in [mine, theirs] {
        let again = x.w.s.apply(now, retry).unwrap();
        assert!(matches!(again.outcome, Outcome::Duplicate(_)), "{again:?}");
    }
    assert!(x.w.s.remembers_request(Some(x.team_editor), &id));
    assert!(!x.w.s.remembers_request(Some(x.acme_admin), &id));
}

#[test]
fn tokens_survive_a_snapshot_and_their_secrets_stay_indexed() {
    let x = Tenants::new();
    let restored = State::restore(&x.w.s.snapshot()).unwrap();
    assert_eq!(restored.digest(), x.w.s.digest());
    assert_eq!(restored.token_by_hash(&secret(3)).unwrap(), x.team_admin);
    assert_eq!(restored.tokens(None), x.w.s.tokens(None));
}

#[test]
fn a_retry_is_answered_with_its_first_outcome_though_no_longer_allowed() {
    let mut x = Tenants::new();
    let release =
        x.w.command(Op::Release {
            reservation_id: x.acme_hold,
        })
        .by(Some(x.team_editor));
    let now = x.w.now;
    let first = x.w.s.apply(now, release.clone()).unwrap();
    assert!(
        matches!(first.outcome, Outcome::Released { .. }),
        "{first:?}"
    );
    // The hold is gone, so a new release would be refused: the retry is a duplicate.
    let again = x.w.s.apply(now, release).unwrap();
    assert!(matches!(again.outcome, Outcome::Duplicate(_)), "{again:?}");
    let fresh = x.refused(
        x.team_editor,
        Op::Release {
            reservation_id: x.acme_hold,
        },
        ErrorKind::NotFound,
    );
    assert!(fresh.message.contains("not open"), "{fresh}");
}
