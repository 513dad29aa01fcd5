//! Roles and permissions: the permission catalogue, the built-in roles, and matching of
//! granted permission strings (with `*` and `module:*` wildcards) against required ones.
//!
//! Pure logic; the database keeps the assignments (see `db::roles`), this module decides.

use serde::Serialize;

/// A permission the platform checks. Grants are strings (with wildcards, see
/// [`covers`]); what a route requires is one of these, so a typo is a compile error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    PlatformAdmin,
    TenantAdmin,
    ModelsRead,
    ChatCreate,
    AccountingRead,
    WebhooksRead,
    WebhooksWrite,
    ScaiechoTranscribe,
    ScaiechoDiarize,
    ScaiechoSpeakerRead,
    ScaiechoSpeakerWrite,
    ScaispeakSpeak,
    ScaispeakVoiceRead,
    ScaispeakVoiceWrite,
    InstancesRead,
    InstancesWrite,
}

impl Permission {
    /// The catalogue, in the order `GET /v1/permissions` lists it.
    pub const ALL: [Permission; 16] = [
        Permission::PlatformAdmin,
        Permission::TenantAdmin,
        Permission::ModelsRead,
        Permission::ChatCreate,
        Permission::AccountingRead,
        Permission::WebhooksRead,
        Permission::WebhooksWrite,
        Permission::ScaiechoTranscribe,
        Permission::ScaiechoDiarize,
        Permission::ScaiechoSpeakerRead,
        Permission::ScaiechoSpeakerWrite,
        Permission::ScaispeakSpeak,
        Permission::ScaispeakVoiceRead,
        Permission::ScaispeakVoiceWrite,
        Permission::InstancesRead,
        Permission::InstancesWrite,
    ];

    /// The permission string grants are matched against.
    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::PlatformAdmin => "platform:admin",
            Permission::TenantAdmin => "tenant:admin",
            Permission::ModelsRead => "models:read",
            Permission::ChatCreate => "chat:create",
            Permission::AccountingRead => "accounting:read",
            Permission::WebhooksRead => "webhooks:read",
            Permission::WebhooksWrite => "webhooks:write",
            Permission::ScaiechoTranscribe => "scaiecho:transcribe",
            Permission::ScaiechoDiarize => "scaiecho:diarize",
            Permission::ScaiechoSpeakerRead => "scaiecho:speaker.read",
            Permission::ScaiechoSpeakerWrite => "scaiecho:speaker.write",
            Permission::ScaispeakSpeak => "scaispeak:speak",
            Permission::ScaispeakVoiceRead => "scaispeak:voice.read",
            Permission::ScaispeakVoiceWrite => "scaispeak:voice.write",
            Permission::InstancesRead => "instances:read",
            Permission::InstancesWrite => "instances:write",
        }
    }

    /// What it allows, for the catalogue.
    pub const fn description(self) -> &'static str {
        match self {
            Permission::PlatformAdmin => "Manage tenants and everything in every tenant",
            Permission::TenantAdmin => {
                "Manage users, roles, API keys and modules of the own tenant"
            }
            Permission::ModelsRead => "List models",
            Permission::ChatCreate => "Call chat completions",
            Permission::AccountingRead => "Read usage and budgets",
            Permission::WebhooksRead => "List webhooks and deliveries",
            Permission::WebhooksWrite => "Create and change webhooks",
            Permission::ScaiechoTranscribe => "Transcribe audio (HTTP, jobs, streams)",
            Permission::ScaiechoDiarize => "Request speaker diarization",
            Permission::ScaiechoSpeakerRead => "List enrolled speakers",
            Permission::ScaiechoSpeakerWrite => "Enroll, warm and delete speakers",
            Permission::ScaispeakSpeak => "Synthesize speech",
            Permission::ScaispeakVoiceRead => "List voices",
            Permission::ScaispeakVoiceWrite => "Create, repromote, warm, evict and delete voices",
            Permission::InstancesRead => "List model instances and why they failed",
            Permission::InstancesWrite => "Launch, start, stop and delete model instances",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A built-in role: id, name, permissions. Stored at start-up so custom tooling can read
/// them from the database like any role.
pub struct BuiltinRole {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub permissions: &'static [&'static str],
}

pub const PLATFORM_ADMIN: &str = "platform_admin";
pub const TENANT_ADMIN: &str = "tenant_admin";
pub const MEMBER: &str = "member";
pub const VIEWER: &str = "viewer";

pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        id: "role_platform_admin",
        name: PLATFORM_ADMIN,
        description: "Everything, in every tenant (platform tenant only)",
        permissions: &["*"],
    },
    BuiltinRole {
        id: "role_tenant_admin",
        name: TENANT_ADMIN,
        description: "Administers one tenant",
        permissions: &[
            "tenant:admin",
            "models:read",
            "chat:create",
            "accounting:read",
            "webhooks:*",
            "scaiecho:*",
            "scaispeak:*",
            "instances:*",
        ],
    },
    BuiltinRole {
        id: "role_member",
        name: MEMBER,
        description: "Uses the platform's models and speech modules",
        permissions: &[
            "models:read",
            "chat:create",
            "scaiecho:transcribe",
            "scaiecho:diarize",
            "scaiecho:speaker.read",
            "scaiecho:speaker.write",
            "scaispeak:speak",
            "scaispeak:voice.read",
            "scaispeak:voice.write",
        ],
    },
    BuiltinRole {
        id: "role_viewer",
        name: VIEWER,
        description: "Reads models, usage, speakers and voices",
        permissions: &[
            "models:read",
            "accounting:read",
            "scaiecho:speaker.read",
            "scaispeak:voice.read",
            "instances:read",
        ],
    },
];

/// The permission catalogue and the built-in roles as Markdown: `docs/permissions.md`,
/// printed by `scaigrid permissions` (a unit test holds the file to this).
pub fn permissions_markdown() -> String {
    let mut out = String::from(
        "# Permissions and roles\n\n\
         A caller's permissions are the union of its roles' and those granted to it \
         directly (users and API keys alike); `GET /v1/me` lists them. A grant is a \
         permission string, `scope:*` (every permission of the scope) or `*`. A key can \
         only be given what its creator holds. Custom roles: `POST /v1/roles`, listed with \
         the built-in ones by `GET /v1/roles`. Generated by `scaigrid permissions`; do \
         not edit by hand.\n\n\
         | Permission | Allows |\n|---|---|\n",
    );
    for permission in Permission::ALL {
        out.push_str(&format!(
            "| `{}` | {} |\n",
            permission.as_str(),
            permission.description()
        ));
    }
    out.push_str("\n## Built-in roles\n\n| Role | For | Grants |\n|---|---|---|\n");
    for role in BUILTIN_ROLES {
        let grants: Vec<String> = role.permissions.iter().map(|p| format!("`{p}`")).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            role.name,
            role.description,
            grants.join(", ")
        ));
    }
    out
}

pub fn builtin_role(name: &str) -> Option<&'static BuiltinRole> {
    BUILTIN_ROLES.iter().find(|role| role.name == name)
}

/// Whether one granted string covers a required (or requested) one.
///
/// `*` covers everything; `scope:*` covers every `scope:...` (and `scope:*` itself);
/// anything else covers only itself.
pub fn covers(granted: &str, required: &str) -> bool {
    if granted == "*" || granted == required {
        return true;
    }
    match granted.strip_suffix('*') {
        Some(prefix) if prefix.ends_with(':') => required.starts_with(prefix),
        _ => false,
    }
}

/// Whether a permission string is well formed: `*`, `scope:*`, or `scope:action` with
/// lowercase letters, digits, `_`, `.` and `-`.
pub fn is_valid_permission(permission: &str) -> bool {
    if permission == "*" {
        return true;
    }
    let Some((scope, action)) = permission.split_once(':') else {
        return false;
    };
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
    };
    word(scope) && (action == "*" || word(action))
}

/// The effective permissions of a principal, deduplicated and sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PermissionSet(Vec<String>);

impl PermissionSet {
    pub fn new(mut permissions: Vec<String>) -> Self {
        permissions.sort();
        permissions.dedup();
        PermissionSet(permissions)
    }

    pub fn allows(&self, required: &str) -> bool {
        self.0.iter().any(|granted| covers(granted, required))
    }

    /// The first of `requested` this set does not cover, if any.
    pub fn first_uncovered<'a>(
        &self,
        requested: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        requested.into_iter().find(|p| !self.allows(p))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_their_scope_only() {
        assert!(covers("*", "scaiecho:transcribe"));
        assert!(covers("scaiecho:*", "scaiecho:transcribe"));
        assert!(covers("scaiecho:*", "scaiecho:*"));
        assert!(!covers("scaiecho:*", "scaispeak:speak"));
        assert!(!covers("scaiecho:*", "*"));
        assert!(!covers("scaiecho:transcribe", "scaiecho:*"));
        assert!(!covers("scaiecho*", "scaiechox:y"));
    }

    #[test]
    fn permission_syntax() {
        assert!(is_valid_permission("scaispeak:voice.read"));
        assert!(is_valid_permission("webhooks:*"));
        assert!(is_valid_permission("*"));
        assert!(!is_valid_permission("Admin"));
        assert!(!is_valid_permission("a:b:c'; DROP TABLE users;--"));
        assert!(!is_valid_permission(":x"));
    }

    #[test]
    fn the_permissions_document_is_the_catalogue() {
        let document = include_str!("../docs/permissions.md");
        assert!(
            document == permissions_markdown(),
            "docs/permissions.md is out of date: run `scaigrid permissions > docs/permissions.md`"
        );
        for permission in Permission::ALL {
            assert!(document.contains(&format!("| `{}` |", permission.as_str())));
        }
    }

    #[test]
    fn builtin_roles_use_known_permissions() {
        for role in BUILTIN_ROLES {
            for permission in role.permissions {
                assert!(is_valid_permission(permission), "{permission}");
                assert!(
                    *permission == "*"
                        || Permission::ALL
                            .iter()
                            .any(|known| covers(permission, known.as_str())),
                    "{permission} of {} covers nothing known",
                    role.name
                );
            }
        }
    }

    #[test]
    fn the_catalogue_is_well_formed_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for permission in Permission::ALL {
            assert!(is_valid_permission(permission.as_str()), "{permission}");
            assert!(seen.insert(permission.as_str()), "{permission} twice");
            assert!(!permission.description().is_empty());
        }
    }

    #[test]
    fn set_reports_the_first_uncovered() {
        let set = PermissionSet::new(vec!["scaiecho:*".into(), "models:read".into()]);
        assert_eq!(
            set.first_uncovered(["scaiecho:diarize", "models:read"]),
            None
        );
        assert_eq!(
            set.first_uncovered(["models:read", "tenant:admin"]),
            Some("tenant:admin")
        );
    }
}
