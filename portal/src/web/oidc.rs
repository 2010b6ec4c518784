//! Sign-in through an OpenID Connect provider: authorization code flow
//! with PKCE, state and nonce (the `openidconnect` crate).
//!
//! `/sign-in/oidc` remembers a pending login (PKCE verifier, nonce, where
//! to go next) under a random `state`, binds it to the browser with a
//! cookie, and redirects to the provider. `/sign-in/oidc/callback` checks
//! cookie and state, exchanges the code, verifies the ID token (signature,
//! issuer, audience, expiry, nonce), then finds or creates the user by
//! e-mail and makes their Keyhole group memberships equal to the groups
//! claim (by group name). Provider metadata is discovered at the first
//! sign-in, so the portal starts even when the provider is down.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use base64::Engine as _;
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
    core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata},
};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::{
    WebExt,
    auth::{safe_next, sign_in_response, start_session},
    session::{cookie, is_https, same_secret, set_cookie},
    sites::portal_url,
};
use crate::{policy::SignInMethod, state::AppState, state::Change};

/// The cookie that ties a pending login to the browser that started it.
const STATE_COOKIE: &str = "kh_oidc";
/// How long a user has at the provider.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Pending logins kept at most (oldest dropped first).
const MAX_PENDING: usize = 10_000;

/// Settings of a generic OIDC provider.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Issuer URL; `<issuer>/.well-known/openid-configuration` must exist.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// ID-token claim holding the user's groups (a list or one string).
    pub groups_claim: String,
    /// Members of this provider group are Keyhole admins, others are not.
    /// Unset: the admin flag is managed in Keyhole only.
    pub admin_group: Option<String>,
    /// Label of the sign-in button.
    pub display_name: String,
}

impl OidcConfig {
    /// Rejects settings that can never work, so the binary fails at start
    /// rather than at the first sign-in.
    pub fn validate(&self) -> anyhow::Result<()> {
        IssuerUrl::new(self.issuer.clone())
            .map_err(|e| anyhow::anyhow!("OIDC issuer `{}`: {e}", self.issuer))?;
        anyhow::ensure!(!self.client_id.is_empty(), "OIDC needs a client id");
        anyhow::ensure!(!self.groups_claim.is_empty(), "OIDC groups claim is empty");
        Ok(())
    }
}

struct PendingLogin {
    verifier: String,
    nonce: String,
    next: String,
    started: Instant,
}

/// A configured provider and the logins in progress.
pub(crate) struct Oidc {
    config: OidcConfig,
    http: openidconnect::reqwest::Client,
    metadata: OnceCell<CoreProviderMetadata>,
    pending: Mutex<HashMap<String, PendingLogin>>,
}

#[derive(Debug, thiserror::Error)]
enum OidcError {
    #[error("the identity provider could not be reached or answered badly: {0}")]
    Provider(String),
    #[error("the sign-in was not started in this browser, or took too long; try again")]
    UnknownState,
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the identity provider's answer did not verify: {0}")]
    Invalid(String),
    #[error("the identity provider gave no e-mail address for this account")]
    NoEmail,
}

impl Oidc {
    pub(crate) fn new(config: OidcConfig) -> anyhow::Result<Self> {
        // No redirects: the token and discovery endpoints answer directly,
        // and following one could leak the code to another host.
        let http = openidconnect::reqwest::ClientBuilder::new()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            // Sign-ins are rare and minutes apart: a pooled connection is
            // usually one the provider already closed (a reset, not a retry).
            .pool_max_idle_per_host(0)
            .build()?;
        IssuerUrl::new(config.issuer.clone())?;
        Ok(Self {
            config,
            http,
            metadata: OnceCell::new(),
            pending: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn display_name(&self) -> &str {
        &self.config.display_name
    }

    async fn client(&self, redirect: String) -> Result<OidcClient, OidcError> {
        let metadata = self
            .metadata
            .get_or_try_init(|| async {
                let issuer = IssuerUrl::new(self.config.issuer.clone())
                    .map_err(|e| OidcError::Provider(e.to_string()))?;
                CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| OidcError::Provider(format!("discovery: {}", chain(&e))))
            })
            .await?
            .clone();
        let redirect =
            RedirectUrl::new(redirect).map_err(|e| OidcError::Provider(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    fn remember(&self, state: String, login: PendingLogin) {
        let mut pending = self.pending.lock();
        pending.retain(|_, p| p.started.elapsed() < PENDING_TTL);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(state, login);
    }

    fn take(&self, state: &str) -> Option<PendingLogin> {
        self.pending
            .lock()
            .remove(state)
            .filter(|p| p.started.elapsed() < PENDING_TTL)
    }
}

type OidcClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

fn callback_url(headers: &HeaderMap, web: &WebExt) -> String {
    format!("{}/sign-in/oidc/callback", portal_url(headers, web))
}

#[derive(Debug, Default, Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

/// Sends the browser to the provider.
pub async fn start(headers: HeaderMap, web: WebExt, Query(q): Query<StartQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    let Some(oidc) = web.oidc.as_ref() else {
        return (StatusCode::NOT_FOUND, "OIDC sign-in is not configured").into_response();
    };
    let client = match oidc.client(callback_url(&headers, &web)).await {
        Ok(c) => c,
        Err(e) => return failed(&headers, &web, &next, &e),
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new(oidc.config.groups_claim.clone()))
        .set_pkce_challenge(challenge)
        .url();
    oidc.remember(
        state.secret().clone(),
        PendingLogin {
            verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
            next,
            started: Instant::now(),
        },
    );
    let cookie = set_cookie(
        STATE_COOKIE,
        state.secret(),
        PENDING_TTL.as_secs() as i64,
        is_https(&headers, &web),
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(url.as_str())).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Where the provider sends the browser back.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    web: WebExt,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(oidc) = web.oidc.as_ref() else {
        return (StatusCode::NOT_FOUND, "OIDC sign-in is not configured").into_response();
    };
    let bound = matches!(
        (cookie(&headers, STATE_COOKIE), q.state.as_deref()),
        (Some(c), Some(s)) if same_secret(c, s)
    );
    let pending = q
        .state
        .as_deref()
        .filter(|_| bound)
        .and_then(|s| oidc.take(s));
    let Some(pending) = pending else {
        return failed(&headers, &web, "/", &OidcError::UnknownState);
    };
    let next = pending.next.clone();
    let signed_in = match finish(&state, oidc, &headers, &web, q, pending).await {
        Ok(user) => user,
        Err(e) => return failed(&headers, &web, &next, &e),
    };
    if signed_in.disabled || !super::auth::may_sign_in(&signed_in, &next) {
        tracing::info!(user = %signed_in.email, "web: OIDC sign-in of a non-admin");
        let msg = format!(
            "Signed in as {}, but only Keyhole administrators use this console.",
            signed_in.email
        );
        return sign_in_response(StatusCode::FORBIDDEN, &headers, &web, &next, "", Some(&msg));
    }
    let mut response = match start_session(
        &state,
        &headers,
        &web,
        &signed_in,
        SignInMethod::Oidc,
        &next,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Ok(v) = set_cookie(STATE_COOKIE, "", 0, is_https(&headers, &web)).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// Code → tokens → verified claims → the user as stored.
async fn finish(
    state: &AppState,
    oidc: &Oidc,
    headers: &HeaderMap,
    web: &WebExt,
    q: CallbackQuery,
    pending: PendingLogin,
) -> Result<crate::store::User, OidcError> {
    if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or_default();
        return Err(OidcError::Refused(
            format!("{error} {detail}").trim().to_owned(),
        ));
    }
    let code = q
        .code
        .ok_or_else(|| OidcError::Refused("no authorization code".into()))?;
    let client = oidc.client(callback_url(headers, web)).await?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| OidcError::Provider(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
        .request_async(&oidc.http)
        .await
        .map_err(|e| OidcError::Provider(format!("token exchange: {}", chain(&e))))?;
    let id_token = tokens
        .id_token()
        .ok_or_else(|| OidcError::Invalid("no ID token".into()))?;
    let claims = id_token
        .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce))
        .map_err(|e| OidcError::Invalid(e.to_string()))?;
    let email = claims
        .email()
        .map(|e| e.as_str().to_owned())
        .ok_or(OidcError::NoEmail)?;
    if claims.email_verified() == Some(false) {
        return Err(OidcError::Invalid(format!("{email} is not verified")));
    }
    let name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| email.clone());
    // The signature was verified above on this very token; its payload is
    // read again only for the configurable groups claim.
    let groups = groups_claim(&id_token.to_string(), &oidc.config.groups_claim);
    let admin = oidc
        .config
        .admin_group
        .as_ref()
        .map(|g| groups.iter().any(|x| x == g));
    let sync = state
        .store
        .sync_oidc_user(&email, &name, &groups, admin, crate::api::now())
        .await
        .map_err(|e| OidcError::Invalid(e.to_string()))?;
    if sync.created {
        state.publish(Change::ActorChanged(sync.user.id.0));
    }
    for g in &sync.changed_groups {
        state.publish(Change::MembershipChanged {
            group: g.0,
            actor: sync.user.id.0,
        });
    }
    tracing::info!(user = %email, groups = ?groups, "web: OIDC sign-in");
    Ok(sync.user)
}

/// An error with its causes, for the sign-in page and the log.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The string values of `claim` in a compact JWT's payload.
fn groups_claim(jwt: &str, claim: &str) -> Vec<String> {
    let Some(payload) = jwt.split('.').nth(1) else {
        return Vec::new();
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return Vec::new();
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    match value.get(claim) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn failed(headers: &HeaderMap, web: &WebExt, next: &str, e: &OidcError) -> Response {
    tracing::warn!(error = %e, "web: OIDC sign-in failed");
    sign_in_response(
        StatusCode::BAD_REQUEST,
        headers,
        web,
        next,
        "",
        Some(&e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload);
        format!("e30.{p}.sig")
    }

    #[test]
    fn groups_come_from_a_list_or_a_single_string_and_nothing_else() {
        assert_eq!(
            groups_claim(&jwt(r#"{"groups":["eng","ops",3]}"#), "groups"),
            vec!["eng", "ops"]
        );
        assert_eq!(
            groups_claim(&jwt(r#"{"roles":"eng"}"#), "roles"),
            vec!["eng"]
        );
        assert!(groups_claim(&jwt(r#"{"groups":{"a":1}}"#), "groups").is_empty());
        assert!(groups_claim("not a jwt", "groups").is_empty());
        assert!(groups_claim("a.!!!.c", "groups").is_empty());
    }
}
