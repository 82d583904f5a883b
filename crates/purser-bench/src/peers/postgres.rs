//! PostgreSQL as the budget store: one row per node, `budget(id, lim, remaining, spent)`. A
//! reservation is one statement, so one round trip and one transaction (committed, with
//! `synchronous_commit` left on): it locks the chain's four rows in id order (`FOR UPDATE`,
//! so that two reservations never deadlock), and takes the amount off all four only if every
//! one has it. A settlement locks and updates the same way. Serialization failures and
//! deadlocks, which that order should rule out, are retried and counted as conflicts.

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use super::{ChainHold, ChainSession};
use crate::backend::{Backend, NodeAudit, Result};
use crate::workload::Tree;

/// Attempts of one statement that fails with a serialization failure or a deadlock.
const ATTEMPTS_MAX: u32 = 100;

/// $1: the chain's ids; $2: the amount. Updates four rows, or none when one lacks the amount.
const RESERVE_SQL: &str = "
WITH locked AS (
    SELECT id, remaining FROM budget WHERE id = ANY($1::int[]) ORDER BY id FOR UPDATE
)
UPDATE budget AS b SET remaining = b.remaining - $2::bigint
FROM locked AS l
WHERE b.id = l.id AND (SELECT bool_and(remaining >= $2::bigint) FROM locked)";

/// $1: the chain's ids; $2: what goes back to `remaining`; $3: what is added to `spent`.
const SETTLE_SQL: &str = "
WITH locked AS (
    SELECT id FROM budget WHERE id = ANY($1::int[]) ORDER BY id FOR UPDATE
)
UPDATE budget AS b SET remaining = b.remaining + $2::bigint, spent = b.spent + $3::bigint
FROM locked AS l
WHERE b.id = l.id";

const SETUP_SQL: &str = "
DROP TABLE IF EXISTS budget;
CREATE TABLE budget (
    id int PRIMARY KEY,
    lim bigint NOT NULL,
    remaining bigint NOT NULL,
    spent bigint NOT NULL
)";

pub struct Postgres {
    conninfo: String,
    /// Setup, audit and limit changes share one connection.
    admin: Client,
}

impl Postgres {
    /// `conninfo` is a libpq connection string, e.g.
    /// `host=127.0.0.1 port=5432 user=postgres dbname=postgres`.
    pub async fn connect(conninfo: &str) -> Result<Postgres> {
        Ok(Postgres {
            conninfo: conninfo.to_string(),
            admin: open(conninfo).await?,
        })
    }
}

async fn open(conninfo: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .map_err(|e| format!("connecting to postgres ({conninfo}): {e}"))?;
    // The connection task ends when the client is dropped, or with the error that the
    // client's next call then reports.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn id(node: usize) -> Result<i32> {
    Ok(i32::try_from(node)?)
}

fn chain_ids(chain: &[usize; 4]) -> Result<Vec<i32>> {
    chain.iter().map(|&node| id(node)).collect()
}

/// Whether a failed statement may simply run again.
fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

impl Backend for Postgres {
    type Session = PostgresSession;

    async fn setup(&self, tree: &Tree) -> Result<()> {
        self.admin.batch_execute(SETUP_SQL).await?;
        let mut ids = Vec::with_capacity(tree.nodes.len());
        let mut limits = Vec::with_capacity(tree.nodes.len());
        for (node, spec) in tree.nodes.iter().enumerate() {
            ids.push(id(node)?);
            limits.push(spec.limit);
        }
        let inserted = self
            .admin
            .execute(
                "INSERT INTO budget (id, lim, remaining, spent) \
                 SELECT id, lim, lim, 0 FROM unnest($1::int[], $2::bigint[]) AS t(id, lim)",
                &[&ids, &limits],
            )
            .await?;
        if inserted != tree.nodes.len() as u64 {
            return Err(format!("inserted {inserted} of {} nodes", tree.nodes.len()).into());
        }
        self.admin.batch_execute("ANALYZE budget").await?;
        Ok(())
    }

    async fn session(&self, _index: usize) -> Result<PostgresSession> {
        let client = open(&self.conninfo).await?;
        let reserve = client.prepare(RESERVE_SQL).await?;
        let settle = client.prepare(SETTLE_SQL).await?;
        Ok(PostgresSession {
            client,
            reserve,
            settle,
            conflicts: 0,
        })
    }

    async fn set_org_limit(&self, tree: &Tree, limit: i64) -> Result<()> {
        assert!(tree.nodes[0].parent.is_none(), "node 0 is the organization");
        let updated = self
            .admin
            .execute(
                "UPDATE budget SET remaining = remaining + ($1::bigint - lim), lim = $1::bigint \
                 WHERE id = $2",
                &[&limit, &id(0)?],
            )
            .await?;
        if updated != 1 {
            return Err("the organization's row is missing".into());
        }
        Ok(())
    }

    async fn audit(&self, tree: &Tree) -> Result<Vec<NodeAudit>> {
        let rows = self
            .admin
            .query(
                "SELECT id, lim, spent, remaining FROM budget ORDER BY id",
                &[],
            )
            .await?;
        let mut audit = Vec::with_capacity(tree.nodes.len());
        for row in rows {
            let node: i32 = row.try_get(0)?;
            if usize::try_from(node).ok() != Some(audit.len()) {
                return Err(format!("node {} missing from postgres", audit.len()).into());
            }
            let (limit, spent, remaining): (i64, i64, i64) =
                (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            audit.push(NodeAudit {
                limit,
                spent,
                held: limit - spent - remaining,
            });
        }
        if audit.len() != tree.nodes.len() {
            return Err(format!(
                "postgres holds {} of {} nodes",
                audit.len(),
                tree.nodes.len()
            )
            .into());
        }
        Ok(audit)
    }
}

pub struct PostgresSession {
    client: Client,
    reserve: Statement,
    settle: Statement,
    conflicts: u64,
}

/// Runs a prepared statement, again after a serialization failure or a deadlock (each one
/// counted in `conflicts`); answers the number of rows it changed.
async fn execute_retrying(
    client: &Client,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
    conflicts: &mut u64,
) -> Result<u64> {
    for _ in 0..ATTEMPTS_MAX {
        match client.execute(statement, params).await {
            Ok(rows) => return Ok(rows),
            Err(e) if retryable(&e) => *conflicts += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Err(format!("{ATTEMPTS_MAX} serialization failures or deadlocks in a row").into())
}

impl ChainSession for PostgresSession {
    async fn hold_chain(&mut self, hold: &ChainHold) -> Result<bool> {
        let ids = chain_ids(&hold.chain)?;
        let params: [&(dyn ToSql + Sync); 2] = [&ids, &hold.amount];
        let changed =
            execute_retrying(&self.client, &self.reserve, &params, &mut self.conflicts).await?;
        match changed {
            4 => Ok(true),
            0 => Ok(false),
            n => Err(format!("a reservation changed {n} rows, not 4 or 0").into()),
        }
    }

    async fn settle_chain(&mut self, chain: &[usize; 4], back: i64, spent: i64) -> Result<()> {
        let ids = chain_ids(chain)?;
        let params: [&(dyn ToSql + Sync); 3] = [&ids, &back, &spent];
        let changed =
            execute_retrying(&self.client, &self.settle, &params, &mut self.conflicts).await?;
        match changed {
            4 => Ok(()),
            n => Err(format!("a settlement changed {n} rows, not 4").into()),
        }
    }

    fn conflicts_retried(&self) -> u64 {
        self.conflicts
    }
}
