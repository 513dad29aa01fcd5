//! Who is calling: the authenticated subject, its tenant and effective permissions.

use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::rbac::Permission;
use crate::rbac::PermissionSet;
use crate::records::RateLimitSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    ApiKey { id: String, name: String },
    User { id: String, email: String },
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: Subject,
    pub tenant_id: String,
    pub tenant_slug: String,
    pub roles: Vec<String>,
    pub permissions: PermissionSet,
    /// Limits of the API key itself (none for users).
    pub rate_limit: Option<RateLimitSpec>,
    /// Limits of the tenant, applied beside the key's.
    pub tenant_rate_limit: Option<RateLimitSpec>,
    /// Modules enabled for the tenant (cached with the principal; enabling or
    /// disabling a module invalidates the cache).
    pub modules: Vec<String>,
    /// Unix milliseconds after which an API key stops working.
    pub expires_at: Option<i64>,
}

impl Principal {
    /// Whose work runs later on their behalf (a job run by a worker): the tenant and
    /// the subject, with no permissions (the request was authorized when it was made).
    /// What a firewall policy attached to the subject's key, and a judge's billing,
    /// need of it.
    pub fn owner(tenant_id: &str, subject_id: &str) -> Principal {
        let subject = match subject_id.starts_with("key_") {
            true => Subject::ApiKey {
                id: subject_id.to_owned(),
                name: String::new(),
            },
            false => Subject::User {
                id: subject_id.to_owned(),
                email: String::new(),
            },
        };
        Principal {
            subject,
            tenant_id: tenant_id.to_owned(),
            tenant_slug: String::new(),
            roles: Vec::new(),
            permissions: PermissionSet::default(),
            rate_limit: None,
            tenant_rate_limit: None,
            modules: Vec::new(),
            expires_at: None,
        }
    }

    pub fn subject_id(&self) -> &str {
        match &self.subject {
            Subject::ApiKey { id, .. } | Subject::User { id, .. } => id,
        }
    }

    /// `"user"` or `"api_key"`, as written to the audit log.
    pub fn subject_kind(&self) -> &'static str {
        match self.subject {
            Subject::ApiKey { .. } => "api_key",
            Subject::User { .. } => "user",
        }
    }

    /// Fails with `AUTHZ_PERMISSION_DENIED` unless the permission is held.
    pub fn require(&self, permission: Permission) -> ApiResult<()> {
        if self.permissions.allows(permission.as_str()) {
            Ok(())
        } else {
            Err(ApiError::permission_denied(permission.as_str()))
        }
    }

    pub fn is_platform_admin(&self) -> bool {
        self.permissions.allows(Permission::PlatformAdmin.as_str())
    }

    /// The tenant an admin call acts on: the caller's own, or (platform admins only)
    /// the one they name. Anyone else naming another tenant gets `NOT_FOUND`, so tenant
    /// ids cannot be probed.
    pub fn target_tenant(&self, requested: Option<&str>) -> ApiResult<String> {
        match requested {
            None => Ok(self.tenant_id.clone()),
            Some(id) if id == self.tenant_id || self.is_platform_admin() => Ok(id.to_owned()),
            Some(_) => Err(ApiError::not_found("tenant")),
        }
    }

    /// Admin rights over a tenant: `tenant:admin` in it, or platform admin.
    pub fn require_tenant_admin(&self, tenant_id: &str) -> ApiResult<()> {
        if self.is_platform_admin() {
            return Ok(());
        }
        self.require(Permission::TenantAdmin)?;
        if tenant_id == self.tenant_id {
            Ok(())
        } else {
            Err(ApiError::not_found("tenant"))
        }
    }
}
