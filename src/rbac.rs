//! Roles and permissions: the permission catalogue, the built-in roles, and matching of
//! granted permission strings (with `*` and `module:*` wildcards) against required ones.
//!
//! Pure logic; the database keeps the assignments (see `db::roles`), this module decides.

use serde::Serialize;

/// Permission strings the platform checks, with what each allows.
pub const PERMISSIONS: &[(&str, &str)] = &[
    (
        "platform:admin",
        "Manage tenants and everything in every tenant",
    ),
    (
        "tenant:admin",
        "Manage users, roles, API keys and modules of the own tenant",
    ),
    ("models:read", "List models"),
    ("chat:create", "Call chat completions"),
    ("accounting:read", "Read usage and budgets"),
    ("webhooks:read", "List webhooks and deliveries"),
    ("webhooks:write", "Create and change webhooks"),
    (
        "scaiecho:transcribe",
        "Transcribe audio (HTTP, jobs, streams)",
    ),
    ("scaiecho:diarize", "Request speaker diarization"),
    ("scaiecho:speaker.read", "List enrolled speakers"),
    ("scaiecho:speaker.write", "Enroll, warm and delete speakers"),
    ("scaispeak:speak", "Synthesize speech"),
    ("scaispeak:voice.read", "List voices"),
    (
        "scaispeak:voice.write",
        "Create, repromote, warm, evict and delete voices",
    ),
];

/// A built-in role: id, name, permissions. Stored at start-up so custom tooling can read
/// them from the database like any role.
pub struct BuiltinRole {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub permissions: &'static [&'static str],
}

pub const PLATFORM_ADMIN: &str = "platform_admin";
/// The permission that makes a platform administrator.
pub const PLATFORM_ADMIN_PERMISSION: &str = "platform:admin";
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
        ],
    },
];

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
    fn builtin_roles_use_known_permissions() {
        for role in BUILTIN_ROLES {
            for permission in role.permissions {
                assert!(is_valid_permission(permission), "{permission}");
                assert!(
                    *permission == "*"
                        || PERMISSIONS
                            .iter()
                            .any(|(known, _)| covers(permission, known)),
                    "{permission} of {} covers nothing known",
                    role.name
                );
            }
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
