//! The console over HTTP as a browser uses it: a session cookie, the CSRF token its pages
//! render, the sign-in form.

use std::time::Duration;

use oxiscale::console::auth::{PRESIGN_COOKIE, SESSION_COOKIE};
use reqwest::{Client, Method, Response, StatusCode, header};

/// The administrator the console tests sign in as, and the password.
pub const ADMIN: &str = "auditor";
pub const PASSWORD: &str = "correct horse battery staple 42";

/// The value of the cookie `name` a response sets, if any.
pub fn cookie_set(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.trim().strip_prefix(&format!("{name}=")))
        .map(str::to_owned)
        .next()
}

/// The value of the session cookie a response sets, if any.
pub fn session_cookie(resp: &Response) -> Option<String> {
    cookie_set(resp, SESSION_COOKIE)
}

/// The CSRF token a console page renders into `<meta name="csrf-token" content=…>`.
pub fn meta_csrf(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf-token\"")?;
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let content = tag.find("content=\"")? + "content=\"".len();
    let len = tag[content..].find('"')?;
    Some(tag[content..content + len].to_owned())
}

pub struct Console {
    pub http: Client,
    pub url: String,
}

/// A browser-like session: the cookie it sends (`name=value`) and its CSRF token.
#[derive(Clone, Debug)]
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

impl Session {
    /// A signed-in session with the session cookie's `value`.
    pub fn signed_in(value: &str, csrf: &str) -> Session {
        Session {
            cookie: format!("{SESSION_COOKIE}={value}"),
            csrf: csrf.to_owned(),
        }
    }
}

impl Console {
    pub fn new(url: &str) -> Console {
        Console {
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            url: url.to_owned(),
        }
    }

    pub fn request(
        &self,
        method: Method,
        path: &str,
        session: Option<&Session>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(s) = session {
            req = req.header(header::COOKIE, &s.cookie);
        }
        req
    }

    /// `GET path`, with the session's cookie when given.
    pub async fn get(&self, path: &str, session: Option<&Session>) -> Response {
        self.request(Method::GET, path, session)
            .send()
            .await
            .expect("request answered")
    }

    /// A server function call as the browser half makes it (JSON body), with `csrf` as the
    /// `x-csrf-token` header and `origin` as the `Origin` header when given.
    pub async fn call(
        &self,
        path: &str,
        session: Option<&Session>,
        csrf: Option<&str>,
        origin: Option<&str>,
    ) -> StatusCode {
        let mut req = self
            .request(Method::POST, path, session)
            .header(header::CONTENT_TYPE, "application/json")
            .body("{}");
        if let Some(token) = csrf {
            req = req.header("x-csrf-token", token);
        }
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        req.send().await.expect("request answered").status()
    }

    /// A server function call with its arguments (`json`: a JSON body; else an empty form,
    /// the encoding of functions without arguments). Answers the status and the body.
    pub async fn call_with(
        &self,
        path: &str,
        session: &Session,
        json: Option<&str>,
    ) -> (StatusCode, String) {
        let req = self
            .request(Method::POST, path, Some(session))
            .header("x-csrf-token", &session.csrf);
        let req = match json {
            Some(body) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_owned()),
            None => req
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(""),
        };
        let resp = req.send().await.expect("request answered");
        (resp.status(), resp.text().await.unwrap_or_default())
    }

    /// `GET /login`: the pre-sign-in cookie and its token. It starts no session.
    pub async fn presession(&self) -> Session {
        let resp = self.get("/login", None).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET /login");
        assert_eq!(session_cookie(&resp), None, "GET /login starts no session");
        let value = cookie_set(&resp, PRESIGN_COOKIE).expect("GET /login sets the presign cookie");
        let cookie = format!("{PRESIGN_COOKIE}={value}");
        let html = resp.text().await.unwrap();
        let csrf = meta_csrf(&html).expect("the login page renders the CSRF token");
        assert!(
            html.contains(&format!("value=\"{csrf}\"")),
            "the login form carries the token as its _csrf field"
        );
        Session { cookie, csrf }
    }

    /// Posts the login form with `csrf` as its `_csrf` field (none when `None`).
    pub async fn post_login(&self, pre: &Session, csrf: Option<&str>) -> Response {
        self.post_login_as(pre, csrf, ADMIN, PASSWORD).await
    }

    pub async fn post_login_as(
        &self,
        pre: &Session,
        csrf: Option<&str>,
        name: &str,
        password: &str,
    ) -> Response {
        let mut form = vec![
            ("username", name),
            ("password", password),
            ("next", "/users"),
        ];
        if let Some(t) = csrf {
            form.push(("_csrf", t));
        }
        self.request(Method::POST, "/login", Some(pre))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Signs in: returns the signed-in session (new cookie, new token from a page's meta).
    pub async fn sign_in(&self) -> Session {
        self.sign_in_as(ADMIN, PASSWORD).await
    }

    pub async fn sign_in_as(&self, name: &str, password: &str) -> Session {
        let pre = self.presession().await;
        let resp = self
            .post_login_as(&pre, Some(&pre.csrf), name, password)
            .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "login answers 303");
        assert_eq!(
            resp.headers()[header::LOCATION],
            "/users",
            "login follows next"
        );
        let value = session_cookie(&resp).expect("login sets the session cookie");
        let page = self
            .get("/users", Some(&Session::signed_in(&value, "")))
            .await;
        assert_eq!(page.status(), StatusCode::OK, "a page opens signed in");
        let csrf = meta_csrf(&page.text().await.unwrap()).expect("pages render the CSRF token");
        assert_ne!(csrf, pre.csrf, "the CSRF token is rotated on sign-in");
        Session::signed_in(&value, &csrf)
    }
}
