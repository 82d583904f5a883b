//! The standard workload: 1 organization → 10 divisions → 100 teams → 10,000 users, a hard
//! monthly limit at every level, and closed-loop clients that each reserve 1,000 micro-USD for
//! a random user, then settle 80 % of holds with a random actual ≤ the hold and release 20 %.

/// A node of the benchmark tree, in micro-USD.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// `org`, `org/d3`, `org/d3/t37`, `org/d3/t37/u3712`.
    pub path: String,
    /// The last path segment.
    pub name: String,
    /// `org`, `division`, `team` or `user`.
    pub kind: &'static str,
    pub parent: Option<usize>,
    pub limit: i64,
}

#[derive(Clone, Debug)]
pub struct Tree {
    /// Parents before children; index 0 is the organization.
    pub nodes: Vec<NodeSpec>,
    /// Index into `nodes` of each user, and of its team, division and organization.
    pub chains: Vec<[usize; 4]>,
}

pub const DIVISIONS: usize = 10;
pub const TEAMS_PER_DIVISION: usize = 10;
pub const USERS_PER_TEAM: usize = 100;
/// What one reservation holds.
pub const HOLD: i64 = 1_000;
/// The share of holds settled with an actual; the rest are released.
pub const SETTLE_PERCENT: u64 = 80;

/// Monthly limits so high that the standard run never meets them (the exhaustion mode lowers
/// the organization's cap mid-run instead); still hard limits that every reservation checks.
pub const LIMIT_USER: i64 = 10_000_000_000;
pub const LIMIT_TEAM: i64 = 100 * LIMIT_USER;
pub const LIMIT_DIVISION: i64 = 10 * LIMIT_TEAM;
pub const LIMIT_ORG: i64 = 10 * LIMIT_DIVISION;

impl Tree {
    pub fn standard() -> Tree {
        let mut nodes = vec![NodeSpec {
            path: "org".into(),
            name: "org".into(),
            kind: "org",
            parent: None,
            limit: LIMIT_ORG,
        }];
        let mut chains = Vec::with_capacity(DIVISIONS * TEAMS_PER_DIVISION * USERS_PER_TEAM);
        let add = |nodes: &mut Vec<NodeSpec>, parent: usize, name: String, kind, limit| {
            let path = format!("{}/{name}", nodes[parent].path);
            nodes.push(NodeSpec {
                path,
                name,
                kind,
                parent: Some(parent),
                limit,
            });
            nodes.len() - 1
        };
        for d in 0..DIVISIONS {
            let div = add(&mut nodes, 0, format!("d{d}"), "division", LIMIT_DIVISION);
            for t in 0..TEAMS_PER_DIVISION {
                let team_no = d * TEAMS_PER_DIVISION + t;
                let team = add(&mut nodes, div, format!("t{team_no}"), "team", LIMIT_TEAM);
                for u in 0..USERS_PER_TEAM {
                    let user_no = team_no * USERS_PER_TEAM + u;
                    let user = add(&mut nodes, team, format!("u{user_no}"), "user", LIMIT_USER);
                    chains.push([user, team, div, 0]);
                }
            }
        }
        Tree { nodes, chains }
    }

    pub fn users(&self) -> usize {
        self.chains.len()
    }
}

/// xorshift64*: each client has its own seeded stream, so a run's choices are reproducible
/// per client and cost nothing to draw.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is far below what a benchmark can see.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one client does after a granted reservation.
pub fn settlement(rng: &mut Rng, held: i64) -> Option<i64> {
    (rng.below(100) < SETTLE_PERCENT).then(|| rng.below(held as u64 + 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_tree_has_four_levels_and_ten_thousand_users() {
        let tree = Tree::standard();
        assert_eq!(tree.nodes.len(), 1 + 10 + 100 + 10_000);
        assert_eq!(tree.users(), 10_000);
        for chain in &tree.chains {
            assert_eq!(tree.nodes[chain[0]].parent, Some(chain[1]));
            assert_eq!(tree.nodes[chain[1]].parent, Some(chain[2]));
            assert_eq!(tree.nodes[chain[2]].parent, Some(chain[3]));
            assert_eq!(chain[3], 0);
        }
        assert_eq!(tree.nodes[tree.chains[3712][0]].path, "org/d3/t37/u3712");
    }

    #[test]
    fn settlements_stay_within_the_hold_and_release_about_a_fifth() {
        let mut rng = Rng::new(7);
        let mut released = 0;
        for _ in 0..10_000 {
            match settlement(&mut rng, HOLD) {
                Some(actual) => assert!((0..=HOLD).contains(&actual)),
                None => released += 1,
            }
        }
        assert!((1_700..2_300).contains(&released), "{released} releases");
    }
}
