//! One layer for the headers that protect pages and tokens, so no handler can forget them.
//!
//! - Every response: `X-Content-Type-Options: nosniff` (a JSON answer is never run as a script)
//!   and `Referrer-Policy: no-referrer` (no URL of Confab's leaves with a link).
//! - Every response that does not say how long it may be cached gets `Cache-Control: no-store`.
//!   That is every API answer, tokens included; only the static files of [`super`] say otherwise.
//! - Every HTML page: the Content-Security-Policy below, and `X-Frame-Options: DENY` for
//!   browsers that predate `frame-ancestors`, so no other site can frame a page and trick a click.
//!   A page that needs an inline style says which through [`InlineStyles`], and the layer
//!   widens `style-src` by exactly that; the policy is still written here and nowhere else.

use std::future::{Ready, ready};

use axum::{
    http::{HeaderMap, HeaderValue, header},
    middleware::{MapResponseLayer, map_response},
    response::Response,
};

/// Both pages load only what Confab itself serves, with no inline script and (but for what a
/// page asks through [`InlineStyles`]) no inline style: scripts, styles, fetches and
/// WebSockets (`'self'` covers `ws:`/`wss:` to the same host) stay on this origin. Fonts and
/// images may also be `data:` URLs: GraphiQL's stylesheet carries its fonts that way.
/// Nothing may frame the pages, and no `<base>`, plugin or foreign form target.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; font-src 'self' data:; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A response extension by which an HTML page asks for the inline styles it needs: `<style>`
/// elements carrying `nonce`, and `style` attributes whose exact text hashes to one of
/// `attribute_hashes` (CSP `'unsafe-hashes'`, `sha256-…` in base64).
#[derive(Clone, Debug)]
pub struct InlineStyles {
    /// Fresh for every response, unguessable.
    pub nonce: String,
    pub attribute_hashes: &'static [&'static str],
}

impl InlineStyles {
    fn policy(&self) -> String {
        let mut style_src = format!("style-src 'self' 'nonce-{}'", self.nonce);
        if !self.attribute_hashes.is_empty() {
            style_src.push_str(" 'unsafe-hashes'");
            for hash in self.attribute_hashes {
                style_src.push_str(&format!(" '{hash}'"));
            }
        }
        CONTENT_SECURITY_POLICY.replacen("style-src 'self'", &style_src, 1)
    }
}

/// The layer's type, for code that stores it.
pub type SecurityHeadersLayer = MapResponseLayer<fn(Response) -> Ready<Response>, (), ()>;

/// The layer that puts the security and caching headers on every response passing through it.
/// Apply it outermost, so responses from fallbacks and other layers get the headers too.
pub fn security_headers_layer() -> SecurityHeadersLayer {
    map_response(with_security_headers as fn(Response) -> Ready<Response>)
}

fn with_security_headers(mut response: Response) -> Ready<Response> {
    let page_policy = is_html(response.headers()).then(|| {
        response
            .extensions()
            .get::<InlineStyles>()
            // A nonce or hash that cannot be a header value widens nothing.
            .and_then(|styles| HeaderValue::from_str(&styles.policy()).ok())
            .unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY))
    });
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if let Some(policy) = page_policy {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    ready(response)
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .get(..9)
                .is_some_and(|start| start.eq_ignore_ascii_case("text/html"))
        })
}
