//! `scaigrid worker`: the background process of the scaled deployment.
//!
//! Today it connects, migrates and waits for a stop signal; the job kinds (ScaiEcho and
//! ScaiSpeak jobs, webhook deliveries) register here as their issues land.

use crate::config::Config;
use crate::db::Db;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let db = Db::connect(&config.database).await?;
    crate::db::migrate::run(&db).await?;
    tracing::info!("worker started (no job kinds registered yet)");
    crate::server::shutdown_signal().await;
    tracing::info!("worker stopped");
    Ok(())
}
