//! The firewall's judge rules ask their evaluator model through the gateway itself:
//! routed, breaker-guarded, rate-limited and billed like any chat call of the tenant
//! (under the `firewall` module), but not guarded by the firewall again.

use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;

use super::Gateway;
use crate::auth::Principal;
use crate::firewall::Judge;

/// The gateway as the firewall's judge. Weak: the gateway holds the firewall, and the
/// firewall must not keep the gateway alive.
pub struct GatewayJudge(Weak<Gateway>);

impl GatewayJudge {
    /// Plugs the gateway into its firewall's judge slot.
    pub fn install(gateway: &Arc<Gateway>) {
        gateway
            .firewall
            .set_judge(Arc::new(GatewayJudge(Arc::downgrade(gateway))));
    }
}

impl Judge for GatewayJudge {
    fn ask<'a>(
        &'a self,
        principal: &'a Principal,
        model: &'a str,
        prompt: String,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let gateway = self.0.upgrade().ok_or("the gateway has stopped")?;
            super::chat::judge(gateway, Arc::new(principal.clone()), model, prompt)
                .await
                .map_err(|error| format!("{}: {}", error.code.as_str(), error.message))
        })
    }
}
