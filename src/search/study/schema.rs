//! The study schema: SQL migrations kept in the repository (`migrations/NNNN_*.sql`), applied
//! in order by a small runner that records each applied version in `hf_tailor_schema`.
//! Migrations run in one transaction under an advisory lock, so processes starting together
//! apply each once; a database with a newer schema than this build knows is refused.

use super::StudyError;

/// Every migration, in version order (version = position + 1).
pub const MIGRATIONS: &[(&str, &str)] = &[("0001_study", include_str!("../../../migrations/0001_study.sql"))];

/// Advisory lock key for the migration runner (any constant unique to hf-tailor).
const MIGRATION_LOCK: i64 = 0x6866_7461_696c_6f72;

/// Bring the database's schema to the newest version; returns the version.
pub fn migrate(client: &mut postgres::Client) -> Result<i32, StudyError> {
    let mut tx = client.transaction().map_err(StudyError::db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(StudyError::db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS hf_tailor_schema (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        .map_err(StudyError::db)?;
    let current: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM hf_tailor_schema", &[]).map_err(StudyError::db)?.get(0);
    let newest = MIGRATIONS.len() as i32;
    if current > newest {
        return Err(StudyError::Mismatch(format!(
            "the database's study schema is version {current}, newer than this hf-tailor knows ({newest}): upgrade hf-tailor"
        )));
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).map_err(StudyError::db)?;
        tx.execute("INSERT INTO hf_tailor_schema (version, name) VALUES ($1, $2)", &[&(i as i32 + 1), name]).map_err(StudyError::db)?;
    }
    tx.commit().map_err(StudyError::db)?;
    Ok(newest)
}
