//! Server functions: the only way the browser half reaches the server. Each one fetches the
//! backend from context, so it runs identically during SSR and over HTTP.

use std::future::Future;

use futures_util::{Sink, Stream};
use leptos::prelude::*;
use leptos::server_fn::Bytes;
use leptos::server_fn::client::Client;
use leptos::server_fn::client::browser::BrowserClient;
use leptos::server_fn::error::FromServerFnError;
use serde::{Deserialize, Serialize};

use crate::dto::{ConsoleConfig, ConsoleError};

pub mod audit;
pub mod dns;
pub mod identity;
pub mod policy;
pub mod roles;
pub mod tailnet;

pub use roles::{Permission, Role, Scope};

/// URL prefix of every console server function. Kept out of `/api`, which belongs to the
/// server's own HTTP API.
pub const SERVER_FN_PREFIX: &str = "/console/fn";

/// Header that carries the session's CSRF token on every server function call.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Name of the hidden field that carries the CSRF token in a plain HTML form post.
pub const CSRF_FIELD: &str = "_csrf";
/// `<meta name=…>` in the document head holding the CSRF token (see [`crate::shell`]).
pub const CSRF_META: &str = "csrf-token";
/// `<meta name=…>` holding the signed-in administrator's name.
pub const USER_META: &str = "console-user";
/// `<meta name=…>` holding the identity provider's sign-in label (sign-in page only).
pub const SSO_META: &str = "console-sso";

/// How the administrator proved who they are. OpenID Connect adds a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMethod {
    /// A local account: name and password stored (hashed) in the server's database.
    Local,
    /// A person signed in through the OpenID Connect provider.
    Oidc,
}

/// The signed-in administrator. The server's auth middleware puts it in the request
/// extensions of every authenticated console request; read it with [`current_admin`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleIdentity {
    /// The local account's id, or the tailnet user's id for a provider sign-in.
    pub admin_id: u64,
    pub name: String,
    pub method: AuthMethod,
    pub role: Role,
    /// The tailnet user this person is (provider sign-ins): whose machines are "own".
    pub user_id: Option<u64>,
}

impl ConsoleIdentity {
    /// Whose things this person may act on for `p`: everyone's if the role allows it,
    /// their own if they are a person with machines, else refused.
    pub fn scope(&self, p: Permission) -> Result<Scope, ConsoleError> {
        if self.role.allows(p) {
            return Ok(Scope::All);
        }
        match self.user_id {
            Some(me) if self.role == Role::Member => Ok(Scope::OwnOf(me)),
            _ => Err(self.refusal()),
        }
    }

    /// Refuses unless the role allows `p` for everyone's things.
    pub fn require(&self, p: Permission) -> Result<(), ConsoleError> {
        if self.role.allows(p) {
            Ok(())
        } else {
            Err(self.refusal())
        }
    }

    fn refusal(&self) -> ConsoleError {
        ConsoleError::NotAllowed(format!(
            "your console role ({}) does not allow this",
            self.role.label()
        ))
    }
}

/// The session's CSRF token, placed in the request extensions next to the identity (also for
/// the signed-out pages, whose forms need it too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrfToken(pub String);

/// The administrator behind the current request, in a server function or a server render.
/// Every console server function is reached only through the auth middleware, so `SignedOut`
/// here means a wiring mistake or an unauthenticated render.
#[cfg(feature = "ssr")]
pub fn current_admin() -> Result<ConsoleIdentity, ConsoleError> {
    request_extension::<ConsoleIdentity>().ok_or(ConsoleError::SignedOut)
}

#[cfg(feature = "ssr")]
fn request_extension<T: Clone + Send + Sync + 'static>() -> Option<T> {
    use_context::<http::request::Parts>().and_then(|parts| parts.extensions.get::<T>().cloned())
}

/// Offered on the sign-in page when an identity provider is configured: the label of its
/// "Sign in with …" link. The server's auth middleware puts it in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoOffer(pub String);

/// The per-request facts the document head carries for the browser half. Rendered into
/// `<meta>` by the shell on the server.
#[derive(Debug, Clone, Default)]
pub struct SessionMeta {
    pub csrf: Option<String>,
    /// The signed-in person's name.
    pub user: Option<String>,
    /// The identity provider's sign-in label, on the sign-in page.
    pub sso: Option<String>,
}

pub fn session_meta() -> SessionMeta {
    #[cfg(feature = "ssr")]
    {
        SessionMeta {
            csrf: request_extension::<CsrfToken>().map(|t| t.0),
            user: request_extension::<ConsoleIdentity>().map(|i| i.name),
            sso: request_extension::<SsoOffer>().map(|o| o.0),
        }
    }
    #[cfg(not(feature = "ssr"))]
    {
        SessionMeta::default()
    }
}

/// Reads one of the shell's `<meta>` values in the browser.
#[cfg(feature = "hydrate")]
fn meta_content(name: &str) -> Option<String> {
    web_sys::window()?
        .document()?
        .query_selector(&format!("meta[name=\"{name}\"]"))
        .ok()??
        .get_attribute("content")
}

/// Set when the page is being left on purpose (signing out): a server function that fails
/// with "signed out" meanwhile must not turn that navigation into a sign-in redirect.
#[cfg(feature = "hydrate")]
static LEAVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called as the page starts leaving on purpose (the sign-out form is submitted).
pub fn leaving() {
    #[cfg(feature = "hydrate")]
    LEAVING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Leaves for `/login?next=<this page>` (the sign-in form returns there), unless the page is
/// already on its way somewhere.
#[cfg(feature = "hydrate")]
fn go_to_sign_in() {
    if LEAVING.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let Some(location) = web_sys::window().map(|w| w.location()) else {
        return;
    };
    let here = format!(
        "{}{}",
        location.pathname().unwrap_or_default(),
        location.search().unwrap_or_default()
    );
    let Ok(query) = web_sys::UrlSearchParams::new() else {
        return;
    };
    query.append("next", &here);
    let _ = location.assign(&format!("/login?{}", String::from(query.to_string())));
}

/// The CSRF token for forms: from the request on the server, from the document head in the
/// browser, so both halves render the same value and hydration matches.
pub fn csrf_token() -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        meta_content(CSRF_META)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        session_meta().csrf
    }
}

/// The signed-in administrator's name, the same way as [`csrf_token`].
pub fn signed_in_name() -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        meta_content(USER_META)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        session_meta().user
    }
}

/// The "Sign in with …" label when an identity provider is configured, the same way as
/// [`csrf_token`].
pub fn sso_label() -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        meta_content(SSO_META)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        session_meta().sso
    }
}

/// The HTTP client behind every console server function: name it in each `#[server]` as
/// `client = crate::api::ConsoleClient`. It is leptos' fetch client plus the `x-csrf-token`
/// header, which the server requires on every console POST; and when the server answers 401
/// (the session ended: signed out elsewhere, expired), it sends the browser to sign in and
/// back to this page afterwards, whatever the page was doing.
pub struct ConsoleClient;

impl<E, IS, OS> Client<E, IS, OS> for ConsoleClient
where
    E: FromServerFnError,
    IS: FromServerFnError,
    OS: FromServerFnError,
{
    type Request = <BrowserClient as Client<E, IS, OS>>::Request;
    type Response = <BrowserClient as Client<E, IS, OS>>::Response;

    fn send(req: Self::Request) -> impl Future<Output = Result<Self::Response, E>> + Send {
        #[cfg(feature = "hydrate")]
        if let Some(token) = meta_content(CSRF_META) {
            req.headers().set(CSRF_HEADER, &token);
        }
        let sent = <BrowserClient as Client<E, IS, OS>>::send(req);
        async move {
            let response = sent.await?;
            #[cfg(feature = "hydrate")]
            if leptos::server_fn::response::ClientRes::<E>::status(&response) == 401 {
                go_to_sign_in();
            }
            Ok(response)
        }
    }

    #[allow(clippy::type_complexity)]
    fn open_websocket(
        path: &str,
    ) -> impl Future<
        Output = Result<
            (
                impl Stream<Item = Result<Bytes, Bytes>> + Send + 'static,
                impl Sink<Bytes> + Send + 'static,
            ),
            E,
        >,
    > + Send {
        <BrowserClient as Client<E, IS, OS>>::open_websocket(path)
    }

    fn spawn(future: impl Future<Output = ()> + Send + 'static) {
        <BrowserClient as Client<E, IS, OS>>::spawn(future)
    }
}

/// The server's public settings the console shows (join command and the like).
#[server(prefix = "/console/fn", endpoint = "config", client = ConsoleClient)]
pub async fn get_console_config() -> Result<ConsoleConfig, ConsoleError> {
    let (backend, _) = crate::backend::use_backend(Permission::SignedIn)?;
    Ok(ConsoleConfig {
        server_url: backend.server_url(),
    })
}
