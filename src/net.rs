//! What counts as a loopback address: the one place plain HTTP is accepted
//! (the vendor base URL, pre-signed URLs) and where S3 is addressed
//! path-style, so that local stand-ins work without TLS or DNS tricks.

use std::net::IpAddr;

use url::{Host, Url};

/// `localhost`, `127.0.0.0/8` or `[::1]`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// `https`, or `http` on a loopback host: the rule for every URL a secret
/// or a file travels to.
pub fn is_secure_or_loopback(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => is_loopback(url),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for (u, loopback) in [
            ("http://127.0.0.1:9000", true),
            ("http://127.8.0.1", true),
            ("http://localhost:1", true),
            ("http://[::1]:8", true),
            ("http://10.0.0.1", false),
            ("http://localhost.example.com", false),
            ("https://s3.amazonaws.com", false),
        ] {
            assert_eq!(is_loopback(&Url::parse(u).unwrap()), loopback, "{u}");
        }
        assert!(is_secure_or_loopback(
            &Url::parse("https://x.example").unwrap()
        ));
        assert!(!is_secure_or_loopback(
            &Url::parse("http://x.example").unwrap()
        ));
        assert!(!is_secure_or_loopback(
            &Url::parse("ftp://127.0.0.1").unwrap()
        ));
    }
}
