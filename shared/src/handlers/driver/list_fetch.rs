//! The bundle list behind `bundle_fqids_url`: an object under [`LISTS_PREFIX`] in the
//! store, or a public URL, fetched with a guard against server-side request forgery.

use std::net::IpAddr;
use std::time::Duration;

use crate::app::App;
use crate::fqid::Fqid;
use crate::request::{self, Rejection};
use crate::store::validate_key;

use super::error::ApiError;

/// Where bundle lists named by key live in the store.
const LISTS_PREFIX: &str = "lists/";

/// Reads the bundle list behind `bundle_fqids_url`.
pub(super) async fn fetch_list(app: &App, url: &str) -> Result<Vec<Fqid>, ApiError> {
    let text = if url.contains("://") {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Rejection::bad(format!("bundle_fqids_url: {e}")))?;
        let allowed_scheme = parsed.scheme() == "https"
            || (app.config.allow_private_urls && parsed.scheme() == "http");
        if !allowed_scheme {
            return Err(Rejection::bad(format!(
                "bundle_fqids_url: the scheme {:?} is not allowed; use https, or a key in the store",
                parsed.scheme()
            ))
            .into());
        }
        fetch(app, parsed).await?
    } else {
        if let Err(e) = validate_key(url) {
            return Err(Rejection::bad(format!("bundle_fqids_url: {e}")).into());
        }
        // Only lists: any other key (the catalog, a manifest) would be echoed back in
        // the parse errors of a user who may not read it.
        if !url.starts_with(LISTS_PREFIX) {
            return Err(Rejection::bad(format!(
                "bundle_fqids_url: a key in the store must be under {LISTS_PREFIX}"
            ))
            .into());
        }
        match app.store.get(url).await? {
            Some(body) => String::from_utf8_lossy(&body).into_owned(),
            None => {
                return Err(ApiError::refuse(
                    404,
                    format!("bundle_fqids_url: no object {url:?} in the store"),
                ));
            }
        }
    };
    Ok(request::parse_fqid_list(&text)?)
}

/// Fetches a public URL: its host must resolve to public addresses only (unless allowed),
/// and the connection goes to the address checked, so DNS cannot swap it afterwards.
async fn fetch(app: &App, url: reqwest::Url) -> Result<String, Rejection> {
    const MAX_LIST_BYTES: usize = 16 << 20;
    let bad_gateway = |m: String| Rejection {
        status: 502,
        message: m,
    };
    let host = url
        .host_str()
        .ok_or_else(|| Rejection::bad("bundle_fqids_url: no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| bad_gateway(format!("bundle_fqids_url: cannot resolve {host}: {e}")))?
        .collect();
    let Some(&addr) = addrs.first() else {
        return Err(bad_gateway(format!(
            "bundle_fqids_url: {host} has no address"
        )));
    };
    if !app.config.allow_private_urls && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(Rejection::bad(format!(
            "bundle_fqids_url: {host} is a private or loopback address"
        )));
    }
    let client = reqwest::Client::builder()
        .resolve(&host, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| bad_gateway(format!("bundle_fqids_url: {e}")))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| bad_gateway(format!("bundle_fqids_url: {e}")))?;
    if !response.status().is_success() {
        return Err(bad_gateway(format!(
            "bundle_fqids_url: the server answered {}",
            response.status()
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| bad_gateway(format!("bundle_fqids_url: {e}")))?;
    if body.len() > MAX_LIST_BYTES {
        return Err(Rejection::bad(format!(
            "bundle_fqids_url: the list is over {MAX_LIST_BYTES} bytes"
        )));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 0
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
