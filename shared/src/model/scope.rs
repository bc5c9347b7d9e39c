//! API key scopes: `read` = every GET; `send` = transactional sending and reading a
//! message; `full` = everything.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Full,
    Send,
    Read,
}

/// What a request needs from its key's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any GET.
    Read,
    /// `POST /v1/send`, `GET /v1/messages/{id}`.
    Send,
    /// Everything else.
    Write,
}

impl Scope {
    pub fn allows(self, access: Access) -> bool {
        match self {
            Scope::Full => true,
            Scope::Read => access == Access::Read,
            Scope::Send => access == Access::Send,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Full => "full",
            Scope::Send => "send",
            Scope::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "full" => Some(Scope::Full),
            "send" => Some(Scope::Send),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_allow_what_the_conventions_say() {
        assert!(Scope::Full.allows(Access::Write));
        assert!(Scope::Read.allows(Access::Read));
        assert!(!Scope::Read.allows(Access::Write));
        assert!(!Scope::Read.allows(Access::Send));
        assert!(Scope::Send.allows(Access::Send));
        assert!(!Scope::Send.allows(Access::Read));
    }
}
