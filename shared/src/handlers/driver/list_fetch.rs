//! The bundle list behind `bundle_fqids_url`: an object under [`LISTS_PREFIX`] in the
//! store, or a public URL, fetched with a guard against server-side request forgery
//! ([0041](../../../../docs/decisions/0041-url-lists-and-the-ssrf-guard.md),
//! [0051](../../../../docs/decisions/0051-the-list-fetch-is-pinned-streamed-and-capped.md)).
//!
//! A URL goes through two steps: [`guard`] checks the scheme and port, resolves the host
//! once and checks every address against IANA's special-purpose registries
//! ([`special_purpose`]); [`fetch_pinned`] then connects to the address checked (no
//! proxy, no redirect, a connect timeout) and streams the body, stopping at the cap.
//! The fetch knows nothing of the guard, so its tests run against a server on
//! 127.0.0.1, which the guard refuses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::app::App;
use crate::fqid::Fqid;
use crate::request::{self, Rejection};
use crate::store::validate_key;

use super::error::ApiError;

/// Where bundle lists named by key live in the store.
const LISTS_PREFIX: &str = "lists/";

/// The only port a list URL may name (explicitly or as https's default): any other
/// would let a caller probe the services on a public host's other ports.
const HTTPS_PORT: u16 = 443;

/// How long a list fetch may take, and how much it may read.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connecting (TCP and TLS handshakes excluded) to the address checked.
    connect: Duration,
    /// Everything: resolving, connecting, the TLS handshake, the answer and its body.
    total: Duration,
    /// Bytes of body read at most; the fetch stops reading at this many.
    max_bytes: usize,
}

/// The limits of a fetch in production.
const LIMITS: Limits = Limits {
    connect: Duration::from_secs(3),
    total: Duration::from_secs(10),
    max_bytes: 16 << 20,
};

/// Reads the bundle list behind `bundle_fqids_url`.
pub(super) async fn fetch_list(app: &App, url: &str) -> Result<Vec<Fqid>, ApiError> {
    let text = if url.contains("://") {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Rejection::bad(format!("bundle_fqids_url: {e}")))?;
        let allow = app.config.allow_private_urls;
        let body = match tokio::time::timeout(LIMITS.total, async {
            let target = guard(parsed, allow).await?;
            fetch_pinned(&target, LIMITS).await
        })
        .await
        {
            Ok(body) => body?,
            Err(_) => return Err(timed_out(LIMITS).into()),
        };
        String::from_utf8_lossy(&body).into_owned()
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

/// A URL the guard let through: the host name (for TLS and the Host header) and the one
/// address the connection must go to.
#[derive(Debug)]
struct Target {
    url: reqwest::Url,
    host: String,
    addr: SocketAddr,
}

fn bad_gateway(message: String) -> Rejection {
    Rejection {
        status: 502,
        message,
    }
}

fn timed_out(limits: Limits) -> Rejection {
    Rejection {
        status: 504,
        message: format!(
            "bundle_fqids_url: no whole answer within {} s",
            limits.total.as_secs_f64()
        ),
    }
}

/// The guard: https on port 443 only, and a host whose every address is outside IANA's
/// special-purpose registries. The host is resolved here, once; the fetch connects to
/// the address returned, so a second DNS answer cannot swap it. `allow_private` (set in
/// code by tests, never from the environment) lifts the scheme, port and address rules.
async fn guard(url: reqwest::Url, allow_private: bool) -> Result<Target, Rejection> {
    let scheme_ok = url.scheme() == "https" || (allow_private && url.scheme() == "http");
    if !scheme_ok {
        return Err(Rejection::bad(format!(
            "bundle_fqids_url: the scheme {:?} is not allowed; use https, or a key in the store",
            url.scheme()
        )));
    }
    let port = url.port_or_known_default().unwrap_or(HTTPS_PORT);
    if port != HTTPS_PORT && !allow_private {
        return Err(Rejection::bad(format!(
            "bundle_fqids_url: port {port} is not allowed; only {HTTPS_PORT}"
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| Rejection::bad("bundle_fqids_url: no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| bad_gateway(format!("bundle_fqids_url: cannot resolve {host}: {e}")))?
        .collect();
    let Some(&addr) = addrs.first() else {
        return Err(bad_gateway(format!(
            "bundle_fqids_url: {host} has no address"
        )));
    };
    if !allow_private {
        // Every address, not just the one used: a name that also resolves to a private
        // address is refused as a whole.
        for a in &addrs {
            if let Some(range) = special_purpose(a.ip()) {
                return Err(Rejection::bad(format!(
                    "bundle_fqids_url: {host} resolves to {}, a private or special-purpose address ({range})",
                    a.ip()
                )));
            }
        }
    }
    Ok(Target { url, host, addr })
}

/// Fetches `target.url` from `target.addr` with no proxy (the environment's proxy
/// variables would send the request somewhere the guard never checked) and no
/// redirects, reading the body a chunk at a time and stopping at `limits.max_bytes`.
async fn fetch_pinned(target: &Target, limits: Limits) -> Result<Vec<u8>, Rejection> {
    let fail = |e: reqwest::Error| {
        if e.is_connect() && e.is_timeout() {
            Rejection {
                status: 504,
                message: format!(
                    "bundle_fqids_url: could not connect to {} within {} s",
                    target.addr,
                    limits.connect.as_secs_f64()
                ),
            }
        } else if e.is_timeout() {
            timed_out(limits)
        } else {
            bad_gateway(format!("bundle_fqids_url: {e}"))
        }
    };
    let over = || {
        Rejection::bad(format!(
            "bundle_fqids_url: the list is over {} bytes",
            limits.max_bytes
        ))
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve(&target.host, target.addr)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(limits.connect)
        .timeout(limits.total)
        .build()
        .map_err(fail)?;
    let mut response = client.get(target.url.clone()).send().await.map_err(fail)?;
    if !response.status().is_success() {
        return Err(bad_gateway(format!(
            "bundle_fqids_url: the server answered {}",
            response.status()
        )));
    }
    if response
        .content_length()
        .is_some_and(|n| n > limits.max_bytes as u64)
    {
        return Err(over());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fail)? {
        if body.len() + chunk.len() > limits.max_bytes {
            // Dropping the response closes the connection: nothing more is read.
            return Err(over());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// IANA's IPv4 Special-Purpose Address Registry (as of 2025), with the multicast block
/// (224.0.0.0/4, from the multicast registry): every entry, including the few marked
/// globally reachable (anycast services, AS112), which no bundle list is served from.
const V4_SPECIAL: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "0.0.0.0/8, this network"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "10.0.0.0/8, private use"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "100.64.0.0/10, shared address space",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "127.0.0.0/8, loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "169.254.0.0/16, link local",
    ),
    (
        Ipv4Addr::new(172, 16, 0, 0),
        12,
        "172.16.0.0/12, private use",
    ),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "192.0.0.0/24, IETF protocol assignments",
    ),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "192.0.2.0/24, documentation",
    ),
    (Ipv4Addr::new(192, 31, 196, 0), 24, "192.31.196.0/24, AS112"),
    (Ipv4Addr::new(192, 52, 193, 0), 24, "192.52.193.0/24, AMT"),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "192.88.99.0/24, 6to4 relay anycast",
    ),
    (
        Ipv4Addr::new(192, 168, 0, 0),
        16,
        "192.168.0.0/16, private use",
    ),
    (
        Ipv4Addr::new(192, 175, 48, 0),
        24,
        "192.175.48.0/24, AS112 direct delegation",
    ),
    (
        Ipv4Addr::new(198, 18, 0, 0),
        15,
        "198.18.0.0/15, benchmarking",
    ),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "198.51.100.0/24, documentation",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "203.0.113.0/24, documentation",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "224.0.0.0/4, multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "240.0.0.0/4, reserved"),
    (
        Ipv4Addr::new(255, 255, 255, 255),
        32,
        "255.255.255.255/32, limited broadcast",
    ),
];

/// IANA's IPv6 Special-Purpose Address Registry (as of 2025), with the deprecated
/// IPv4-compatible (::/96) and site-local (fec0::/10) blocks and multicast (ff00::/8).
/// The two translation prefixes that reach a real IPv4 host, IPv4-mapped (::ffff:0:0/96)
/// and NAT64's well-known prefix (64:ff9b::/96), are not here: their embedded IPv4
/// address is checked instead (see [`special_purpose`]).
const V6_SPECIAL: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        128,
        "::/128, unspecified",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1),
        128,
        "::1/128, loopback",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        "::/96, IPv4-compatible (deprecated)",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "64:ff9b:1::/48, local-use IPv4/IPv6 translation",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "100::/64, discard-only",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0),
        64,
        "100:0:0:1::/64, dummy prefix",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "2001::/23, IETF protocol assignments (Teredo, benchmarking, AMT, AS112, ORCHID, ...)",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "2001:db8::/32, documentation",
    ),
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        "2002::/16, 6to4",
    ),
    (
        Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0),
        48,
        "2620:4f:8000::/48, AS112 direct delegation",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "3fff::/20, documentation",
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        "5f00::/16, segment routing SIDs",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "fc00::/7, unique local",
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        "fe80::/10, link local",
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "fec0::/10, site local (deprecated)",
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        "ff00::/8, multicast",
    ),
];

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The special-purpose range `ip` falls in, or `None` for an address a list may be
/// fetched from. An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64's
/// 64:ff9b::/96, IPv4-compatible, 6to4) is also judged by that IPv4 address, which is
/// where a mapped or NAT64 connection really goes.
fn special_purpose(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => V4_SPECIAL
            .iter()
            .find(|(net, len, _)| in_v4(v4, *net, *len))
            .map(|(_, _, name)| (*name).to_string()),
        IpAddr::V6(v6) => {
            if let Some((v4, how)) = embedded_v4(v6)
                && let Some(range) = special_purpose(IpAddr::V4(v4))
            {
                return Some(format!("{how} of {v4}, in {range}"));
            }
            V6_SPECIAL
                .iter()
                .find(|(net, len, _)| in_v6(v6, *net, *len))
                .map(|(_, _, name)| (*name).to_string())
        }
    }
}

/// The IPv4 address an IPv6 one carries, and how.
fn embedded_v4(v6: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let low = Ipv4Addr::from((u128::from(v6) & 0xffff_ffff) as u32);
    let s = v6.segments();
    if in_v6(v6, Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96) {
        Some((low, "IPv4-mapped"))
    } else if in_v6(v6, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        Some((low, "NAT64"))
    } else if in_v6(v6, Ipv6Addr::UNSPECIFIED, 96) && u128::from(v6) > 1 {
        // :: and ::1 are the unspecified and loopback addresses, not IPv4 ones.
        Some((low, "IPv4-compatible"))
    } else if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        Some((Ipv4Addr::new(a, b, c, d), "6to4"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn every_range_is_refused_from_its_first_to_its_last_address() {
        for &(net, len, name) in V4_SPECIAL {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let first = Ipv4Addr::from(u32::from(net) & mask);
            let last = Ipv4Addr::from(u32::from(net) | !mask);
            for ip in [first, last] {
                assert!(special_purpose(ip.into()).is_some(), "{ip} ({name})");
            }
        }
        for &(net, len, name) in V6_SPECIAL {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let first = Ipv6Addr::from(u128::from(net) & mask);
            let last = Ipv6Addr::from(u128::from(net) | !mask);
            for ip in [first, last] {
                assert!(special_purpose(ip.into()).is_some(), "{ip} ({name})");
            }
        }
    }

    #[test]
    fn the_address_rules_at_the_edges() {
        // (address, the range it is refused in, or "" for an address a list may come from)
        let table: &[(&str, &str)] = &[
            ("8.8.8.8", ""),
            ("1.1.1.1", ""),
            ("0.0.0.0", "0.0.0.0/8"),
            ("0.255.255.255", "0.0.0.0/8"),
            ("1.0.0.0", ""),
            ("9.255.255.255", ""),
            ("10.0.0.0", "10.0.0.0/8"),
            ("10.255.255.255", "10.0.0.0/8"),
            ("11.0.0.0", ""),
            ("100.63.255.255", ""),
            ("100.64.0.0", "100.64.0.0/10"),
            ("100.127.255.255", "100.64.0.0/10"),
            ("100.128.0.0", ""),
            ("126.255.255.255", ""),
            ("127.0.0.0", "127.0.0.0/8"),
            ("127.255.255.255", "127.0.0.0/8"),
            ("128.0.0.0", ""),
            ("169.253.255.255", ""),
            ("169.254.0.0", "169.254.0.0/16"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("169.254.255.255", "169.254.0.0/16"),
            ("169.255.0.0", ""),
            ("172.15.255.255", ""),
            ("172.16.0.0", "172.16.0.0/12"),
            ("172.31.255.255", "172.16.0.0/12"),
            ("172.32.0.0", ""),
            ("191.255.255.255", ""),
            ("192.0.0.0", "192.0.0.0/24"),
            ("192.0.0.9", "192.0.0.0/24"),
            ("192.0.0.255", "192.0.0.0/24"),
            ("192.0.1.0", ""),
            ("192.0.1.255", ""),
            ("192.0.2.0", "192.0.2.0/24"),
            ("192.0.2.255", "192.0.2.0/24"),
            ("192.0.3.0", ""),
            ("192.31.195.255", ""),
            ("192.31.196.0", "192.31.196.0/24"),
            ("192.31.196.255", "192.31.196.0/24"),
            ("192.31.197.0", ""),
            ("192.52.192.255", ""),
            ("192.52.193.0", "192.52.193.0/24"),
            ("192.52.193.255", "192.52.193.0/24"),
            ("192.52.194.0", ""),
            ("192.88.98.255", ""),
            ("192.88.99.0", "192.88.99.0/24"),
            ("192.88.99.255", "192.88.99.0/24"),
            ("192.88.100.0", ""),
            ("192.167.255.255", ""),
            ("192.168.0.0", "192.168.0.0/16"),
            ("192.168.255.255", "192.168.0.0/16"),
            ("192.169.0.0", ""),
            ("192.175.47.255", ""),
            ("192.175.48.0", "192.175.48.0/24"),
            ("192.175.48.255", "192.175.48.0/24"),
            ("192.175.49.0", ""),
            ("198.17.255.255", ""),
            ("198.18.0.0", "198.18.0.0/15"),
            ("198.19.255.255", "198.18.0.0/15"),
            ("198.20.0.0", ""),
            ("198.51.99.255", ""),
            ("198.51.100.0", "198.51.100.0/24"),
            ("198.51.100.255", "198.51.100.0/24"),
            ("198.51.101.0", ""),
            ("203.0.112.255", ""),
            ("203.0.113.0", "203.0.113.0/24"),
            ("203.0.113.255", "203.0.113.0/24"),
            ("203.0.114.0", ""),
            ("223.255.255.255", ""),
            ("224.0.0.0", "224.0.0.0/4"),
            ("239.255.255.255", "224.0.0.0/4"),
            ("240.0.0.0", "240.0.0.0/4"),
            ("255.255.255.254", "240.0.0.0/4"),
            ("255.255.255.255", "240.0.0.0/4"),
            // IPv6
            ("2606:4700:4700::1111", ""),
            ("2a00:1450:4001:80b::200e", ""),
            ("::", "::/128"),
            ("::1", "::1/128"),
            ("::2", "IPv4-compatible of 0.0.0.2"),
            ("::ffff:ffff", "255.255.255.255"),
            ("::8.8.8.8", "::/96"),
            ("::7f00:1", "IPv4-compatible of 127.0.0.1"),
            ("::ffff:0.0.0.0", "IPv4-mapped of 0.0.0.0"),
            ("::ffff:127.0.0.1", "IPv4-mapped of 127.0.0.1"),
            ("::ffff:10.1.2.3", "10.0.0.0/8"),
            ("::ffff:169.254.169.254", "169.254.0.0/16"),
            ("::ffff:255.255.255.255", "IPv4-mapped"),
            ("::ffff:8.8.8.8", ""),
            ("64:ff9b::", "NAT64 of 0.0.0.0"),
            ("64:ff9b::a00:1", "NAT64 of 10.0.0.1"),
            ("64:ff9b::7f00:1", "127.0.0.0/8"),
            ("64:ff9b::c612:1", "198.18.0.0/15"),
            ("64:ff9b::ffff:ffff", "NAT64 of 255.255.255.255"),
            ("64:ff9b::808:808", ""),
            ("64:ff9b:1::", "64:ff9b:1::/48"),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "64:ff9b:1::/48"),
            ("100::", "100::/64"),
            ("100::ffff:ffff:ffff:ffff", "100::/64"),
            ("100:0:0:1::", "100:0:0:1::/64"),
            ("100:0:0:1:ffff:ffff:ffff:ffff", "100:0:0:1::/64"),
            ("2001::", "2001::/23"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001::/23"),
            ("2001:1::1", "2001::/23"),
            ("2001:2::", "2001::/23"),
            ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "2001::/23"),
            ("2001:200::", ""),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", ""),
            ("2001:db8::", "2001:db8::/32"),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::/32"),
            ("2001:db9::", ""),
            ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ""),
            ("2002::", "6to4 of 0.0.0.0"),
            ("2002:a00:1::", "6to4 of 10.0.0.1"),
            ("2002:808:808::1", "2002::/16"),
            (
                "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "6to4 of 255.255.255.255",
            ),
            ("2003::", ""),
            ("2620:4f:7fff:ffff:ffff:ffff:ffff:ffff", ""),
            ("2620:4f:8000::", "2620:4f:8000::/48"),
            ("2620:4f:8000:ffff:ffff:ffff:ffff:ffff", "2620:4f:8000::/48"),
            ("2620:4f:8001::", ""),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ""),
            ("3fff::", "3fff::/20"),
            ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "3fff::/20"),
            ("3fff:1000::", ""),
            ("5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ""),
            ("5f00::", "5f00::/16"),
            ("5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "5f00::/16"),
            ("5f01::", ""),
            ("fc00::", "fc00::/7"),
            ("fd00::1", "fc00::/7"),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fc00::/7"),
            ("fe80::", "fe80::/10"),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::/10"),
            ("fec0::", "fec0::/10"),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fec0::/10"),
            ("ff00::", "ff00::/8"),
            ("ff02::1", "ff00::/8"),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ff00::/8"),
        ];
        for &(ip, expected) in table {
            let got = special_purpose(ip.parse().unwrap());
            match (expected, &got) {
                ("", None) => {}
                ("", Some(range)) => panic!("{ip} refused ({range}) but should be allowed"),
                (want, Some(range)) => assert!(range.contains(want), "{ip}: {range}, want {want}"),
                (want, None) => panic!("{ip} allowed but should be refused ({want})"),
            }
        }
    }

    fn refusal(r: Result<Target, Rejection>) -> Rejection {
        r.expect_err("the guard should refuse")
    }

    #[tokio::test]
    async fn the_guard_refuses_schemes_ports_and_special_hosts_before_any_connection() {
        let parse = |s: &str| reqwest::Url::parse(s).unwrap();
        let r = refusal(guard(parse("http://8.8.8.8/list"), false).await);
        assert!(r.message.contains("scheme"), "{}", r.message);
        let r = refusal(guard(parse("ftp://8.8.8.8/list"), true).await);
        assert!(r.message.contains("scheme"), "{}", r.message);
        // The port is refused before the name is resolved: no DNS lookup.
        for url in [
            "https://example.invalid:8443/l",
            "https://8.8.8.8:80/l",
            "https://[::1]:444/",
        ] {
            let r = refusal(guard(parse(url), false).await);
            assert_eq!(r.status, 400);
            assert!(r.message.contains("port"), "{url}: {}", r.message);
        }
        for (url, range) in [
            ("https://127.0.0.1/l", "127.0.0.0/8"),
            ("https://127.0.0.1:443/l", "127.0.0.0/8"),
            ("https://[::1]/l", "::1/128"),
            ("https://[::ffff:a9fe:a9fe]/latest", "169.254.0.0/16"),
            ("https://[64:ff9b::a00:1]/l", "NAT64 of 10.0.0.1"),
            ("https://[2002:c0a8:1::]/l", "192.168.0.0/16"),
            ("https://0x7f.1/l", "127.0.0.0/8"),
            ("https://localhost/l", "loopback"),
        ] {
            let r = refusal(guard(parse(url), false).await);
            assert_eq!(r.status, 400, "{url}");
            assert!(r.message.contains(range), "{url}: {}", r.message);
        }
        // Tests (and only code: no variable sets it) may allow a loopback http server.
        let t = guard(parse("http://127.0.0.1:8080/l"), true).await.unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
    }

    /// Serves one connection on 127.0.0.1 with `serve`; returns the target to fetch.
    async fn server<F, Fut>(serve: F) -> (Target, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let _ = socket.read(&mut buf).await;
            serve(socket).await;
        });
        let url = reqwest::Url::parse(&format!("http://127.0.0.1:{}/list", addr.port())).unwrap();
        (
            Target {
                url,
                host: "127.0.0.1".into(),
                addr,
            },
            task,
        )
    }

    /// Writes an answer of `len` bytes (with or without a content-length) and then as
    /// many more as the client takes; returns the bytes it managed to write.
    async fn body_server(
        len: usize,
        declare: bool,
        endless: bool,
    ) -> (
        Target,
        tokio::task::JoinHandle<()>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let written = std::sync::Arc::new(AtomicUsize::new(0));
        let w = written.clone();
        let (target, task) = server(move |mut socket| async move {
            let head = if declare {
                format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
            } else {
                "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_string()
            };
            socket.write_all(head.as_bytes()).await.unwrap();
            let line = [b'x'; 64 << 10];
            let mut sent = 0;
            while endless || sent < len {
                let n = if endless {
                    line.len()
                } else {
                    line.len().min(len - sent)
                };
                if socket.write_all(&line[..n]).await.is_err() {
                    break;
                }
                sent += n;
                w.store(sent, Ordering::SeqCst);
            }
            let _ = socket.shutdown().await;
        })
        .await;
        (target, task, written)
    }

    #[tokio::test]
    async fn the_fetch_reads_up_to_the_cap_and_stops_reading_past_it() {
        use std::sync::atomic::Ordering;
        let cap = LIMITS.max_bytes;
        // Exactly 16 MiB, with no length declared: read whole.
        let (target, task, _) = body_server(cap, false, false).await;
        let body = fetch_pinned(&target, LIMITS).await.unwrap();
        assert_eq!(body.len(), cap);
        task.await.unwrap();

        // One byte more: refused.
        let (target, task, _) = body_server(cap + 1, false, false).await;
        let r = fetch_pinned(&target, LIMITS).await.unwrap_err();
        assert_eq!(r.status, 400);
        assert!(r.message.contains("over 16777216 bytes"), "{}", r.message);
        task.abort();

        // An endless body: the fetch returns as soon as it passes the cap, and the
        // server's writes fail once the connection is gone (kernel buffers aside).
        let (target, task, written) = body_server(0, false, true).await;
        let started = Instant::now();
        let r = fetch_pinned(&target, LIMITS).await.unwrap_err();
        assert!(r.message.contains("over"), "{}", r.message);
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the server's writes fail once the fetch stops reading")
            .unwrap();
        let sent = written.load(Ordering::SeqCst);
        assert!(sent < cap + (16 << 20), "the server wrote {sent} bytes");

        // A declared length over the cap is refused before the body is read.
        let (target, task, _) = body_server(cap + 1, true, false).await;
        let r = fetch_pinned(&target, LIMITS).await.unwrap_err();
        assert!(r.message.contains("over"), "{}", r.message);
        task.abort();
    }

    #[tokio::test]
    async fn a_silent_or_slow_server_is_cut_off_at_the_total_limit() {
        let limits = Limits {
            connect: Duration::from_millis(500),
            total: Duration::from_millis(800),
            max_bytes: 1 << 20,
        };
        // Accepts and never answers.
        let (target, task) = server(|socket| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        })
        .await;
        let started = Instant::now();
        let r = fetch_pinned(&target, limits).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(r.status, 504, "{}", r.message);
        assert!(
            took >= limits.total && took < Duration::from_secs(3),
            "{took:?}"
        );
        task.abort();

        // Answers, then trickles its body a byte at a time.
        let (target, task) = server(|mut socket| async move {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                .await;
            for _ in 0..1000 {
                if socket.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let started = Instant::now();
        let r = fetch_pinned(&target, limits).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(r.status, 504, "{}", r.message);
        assert!(
            took >= limits.total && took < Duration::from_secs(3),
            "{took:?}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_connection_that_is_never_accepted_is_cut_off_at_the_connect_limit() {
        // A listener whose accept queue is full drops new SYNs, so a connect hangs.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        let mut full = false;
        for _ in 0..64 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => held.push(s),
                _ => {
                    full = true;
                    break;
                }
            }
        }
        if !full {
            eprintln!("skipped: this kernel accepts connections past a full queue");
            return;
        }
        let limits = Limits {
            connect: Duration::from_millis(300),
            total: Duration::from_secs(5),
            max_bytes: 1 << 20,
        };
        let target = Target {
            url: reqwest::Url::parse(&format!("http://127.0.0.1:{}/l", addr.port())).unwrap(),
            host: "127.0.0.1".into(),
            addr,
        };
        let started = Instant::now();
        let r = fetch_pinned(&target, limits).await.unwrap_err();
        let took = started.elapsed();
        assert!(r.message.contains("connect"), "{}", r.message);
        assert!(
            took >= limits.connect && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(listener);
    }
}
