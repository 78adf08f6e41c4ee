//! `mtp token …`: create API tokens (the secret is shown exactly once), list
//! them, revoke them.

use clap::{Args, Subcommand, ValueEnum};
use mtp_proto::v1::{CreateTokenRequest, ListTokensRequest, RevokeTokenRequest, Token, TokenRole};
use serde::Serialize;

use super::{Ctx, ExpiryArgs};
use crate::errors::CliError;
use crate::output::{self, Details, Table, emit, emit_json};

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token and print its secret (shown once, never again).
    Create(CreateArgs),
    /// List tokens (secrets are never shown).
    #[command(visible_alias = "ls")]
    List,
    /// Revoke a token by id; it stops working immediately.
    Revoke {
        /// Token id (from `mtp token list`).
        id: String,
    },
}

/// Token roles as spelled on the command line and in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Everything (platform admin).
    #[value(alias = "platform-admin")]
    Admin,
    /// Reads and changes one tenant's environments; reads that tenant.
    TenantOwner,
    /// Reads everything in scope (one tenant with --tenant, else all).
    ReadOnly,
}

impl From<Role> for TokenRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => TokenRole::PlatformAdmin,
            Role::TenantOwner => TokenRole::TenantOwner,
            Role::ReadOnly => TokenRole::ReadOnly,
        }
    }
}

/// Stable role name: the same words `--role` accepts.
pub fn role_name(raw: i32) -> &'static str {
    match TokenRole::try_from(raw) {
        Ok(TokenRole::PlatformAdmin) => "admin",
        Ok(TokenRole::TenantOwner) => "tenant-owner",
        Ok(TokenRole::ReadOnly) => "read-only",
        Ok(TokenRole::Unspecified) | Err(_) => "unknown",
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// What the token may do.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Bind the token to a tenant (required for tenant-owner).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Free text to recognise the token later (e.g. "ci for team-a").
    #[arg(long, default_value = "")]
    pub description: String,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
}

pub async fn run(cmd: TokenCmd, ctx: &Ctx) -> Result<(), CliError> {
    match cmd {
        TokenCmd::Create(a) => create(ctx, a).await,
        TokenCmd::List => {
            let resp = ctx
                .api
                .call(
                    "list tokens",
                    ctx.api.tokens().list_tokens(ListTokensRequest {}),
                )
                .await?;
            if ctx.json() {
                #[derive(Serialize)]
                struct L {
                    tokens: Vec<TokenView>,
                }
                emit_json(&L {
                    tokens: resp.tokens.iter().map(TokenView::from).collect(),
                });
            } else {
                emit(&list_table(&resp.tokens, chrono::Utc::now()).render());
            }
            Ok(())
        }
        TokenCmd::Revoke { id } => {
            let t = ctx
                .api
                .call(
                    format!("revoke token {id:?}"),
                    ctx.api
                        .tokens()
                        .revoke_token(RevokeTokenRequest { id: id.clone() }),
                )
                .await?;
            if ctx.json() {
                emit_json(&TokenView::from(&t));
            } else {
                emit(&format!("token {id} revoked\n"));
            }
            Ok(())
        }
    }
}

async fn create(ctx: &Ctx, a: CreateArgs) -> Result<(), CliError> {
    // Caught here because the server's message would only say "tenant: required".
    if a.role == Role::TenantOwner && a.tenant.as_deref().unwrap_or("").is_empty() {
        return Err(CliError::usage(
            "token create: --role tenant-owner needs --tenant",
        ));
    }
    if a.role == Role::Admin && a.tenant.is_some() {
        return Err(CliError::usage(
            "token create: an admin token cannot be bound to a tenant; drop --tenant",
        ));
    }
    let req = CreateTokenRequest {
        role: TokenRole::from(a.role) as i32,
        tenant: a.tenant.unwrap_or_default(),
        description: a.description,
        expire_time: a.expiry.timestamp(chrono::Utc::now()),
    };
    let resp = ctx
        .api
        .call("create token", ctx.api.tokens().create_token(req))
        .await?;
    let token = resp.token.unwrap_or_default();
    if ctx.json() {
        #[derive(Serialize)]
        struct C {
            token: TokenView,
            secret: String,
        }
        emit_json(&C {
            token: TokenView::from(&token),
            secret: resp.secret,
        });
    } else {
        // The warning goes to stderr so `mtp token create … > file` stores
        // just the details and secret, while the human still sees it.
        eprintln!(
            "warning: this is the only time the secret is shown; store it now (e.g. in a file for --token-file)"
        );
        let mut d = Details::new();
        d.field("ID", &token.id)
            .field("Role", role_name(token.role))
            .field("Tenant", &token.tenant)
            .field("Description", &token.description)
            .field(
                "Expires",
                output::rfc3339(token.expire_time.as_ref()).unwrap_or_else(|| "never".into()),
            )
            .field("Secret", &resp.secret);
        emit(&d.render());
    }
    Ok(())
}

fn list_table(tokens: &[Token], now: chrono::DateTime<chrono::Utc>) -> Table {
    let mut t = Table::new(&[
        "ID",
        "ROLE",
        "TENANT",
        "STATE",
        "AGE",
        "EXPIRES",
        "CREATED BY",
        "DESCRIPTION",
    ]);
    for x in tokens {
        t.row(vec![
            x.id.clone(),
            role_name(x.role).into(),
            x.tenant.clone(),
            state(x, now).into(),
            output::age(x.create_time.as_ref(), now),
            output::until(x.expire_time.as_ref(), now),
            x.created_by.clone(),
            x.description.clone(),
        ]);
    }
    t
}

/// `active`, `revoked` or `expired`, computed client-side from the times.
fn state(t: &Token, now: chrono::DateTime<chrono::Utc>) -> &'static str {
    if t.revoke_time.is_some() {
        "revoked"
    } else if output::datetime(t.expire_time.as_ref()).is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

/// JSON shape of a token (never includes the secret).
#[derive(Debug, Serialize)]
pub struct TokenView {
    pub id: String,
    pub description: String,
    /// admin | tenant-owner | read-only | unknown
    pub role: &'static str,
    pub tenant: String,
    pub create_time: Option<String>,
    pub expire_time: Option<String>,
    pub revoke_time: Option<String>,
    pub created_by: String,
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> Self {
        TokenView {
            id: t.id.clone(),
            description: t.description.clone(),
            role: role_name(t.role),
            tenant: t.tenant.clone(),
            create_time: output::rfc3339(t.create_time.as_ref()),
            expire_time: output::rfc3339(t.expire_time.as_ref()),
            revoke_time: output::rfc3339(t.revoke_time.as_ref()),
            created_by: t.created_by.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_between_flag_and_json() {
        for r in [Role::Admin, Role::TenantOwner, Role::ReadOnly] {
            let name = role_name(TokenRole::from(r) as i32);
            let parsed = Role::from_str(name, false).unwrap();
            assert_eq!(parsed, r);
        }
        assert_eq!(
            Role::from_str("platform-admin", false).unwrap(),
            Role::Admin
        );
    }

    #[test]
    fn state_from_times() {
        let now = chrono::DateTime::from_timestamp(1000, 0).unwrap();
        let ts = |s| {
            Some(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        let mut t = Token::default();
        assert_eq!(state(&t, now), "active");
        t.expire_time = ts(999);
        assert_eq!(state(&t, now), "expired");
        t.revoke_time = ts(500);
        assert_eq!(state(&t, now), "revoked");
    }
}
