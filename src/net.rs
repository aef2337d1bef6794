//! Which hosts a secret or a file may travel to: what counts as loopback
//! (the one place plain HTTP is accepted, and where S3 is addressed
//! path-style, so that local stand-ins work without TLS or DNS tricks), and
//! which addresses are public (the only ones a pre-signed transfer may
//! reach outside local runs, SPEC section 11).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// `https`, or `http` on a loopback host: the rule for the vendor's base
/// URL, which carries the secret key.
pub fn is_secure_or_loopback(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => is_loopback(url),
        _ => false,
    }
}

/// Whether an address is on the public internet: not loopback, private
/// (RFC 1918, unique local), link-local (where instance metadata lives),
/// shared (carrier-grade NAT), unspecified, broadcast or multicast. Inside
/// Lambda, loopback is the Runtime API (127.0.0.1:9001) and the extensions;
/// private and link-local addresses are the VPC and the host.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10, shared address space.
        || (a == 100 && (64..128).contains(&b))
        // 198.18.0.0/15, benchmarking; 240.0.0.0/4, reserved.
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local, fec0::/10 site-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0)
}

/// Why a pre-signed URL may not be used, if it may not (SPEC section 11):
/// `https` to a public host; but when `local` (the vendor's base URL is
/// itself on loopback: local runs and tests), `http` or `https` to any host,
/// loopback, link-local and private addresses included (a stand-in in a
/// container network, LocalStack's pre-signed S3 URLs). A host given by
/// name is checked again where it is resolved ([`PublicOnly`]), outside
/// local runs.
pub fn transfer_refusal(url: &Url, local: bool) -> Option<&'static str> {
    if local {
        return (!matches!(url.scheme(), "http" | "https")).then_some("is not http or https");
    }
    if url.scheme() != "https" {
        return Some("is not https");
    }
    let public = match url.host() {
        Some(Host::Ipv4(ip)) => is_public(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => is_public(IpAddr::V6(ip)),
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            !(d == "localhost" || d.ends_with(".localhost"))
        }
        None => false,
    };
    (!public).then_some("does not name a public host")
}

/// A DNS resolver that gives only public addresses ([`is_public`]), for
/// the pre-signed transfers outside local runs: a vendor answer can name a
/// host whose DNS points inside the sandbox or the VPC, which the URL alone
/// does not show.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(NOT_PUBLIC.into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

const NOT_PUBLIC: &str = "the host resolves to no public address";

/// Whether a request failed because [`PublicOnly`] refused its host.
pub fn refused_by_resolver(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.to_string() == NOT_PUBLIC {
            return true;
        }
        cause = e.source();
    }
    false
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

    #[test]
    fn transfers_go_to_public_https_hosts_outside_local_runs() {
        for refused in [
            "http://uploads.example.com/x",
            "https://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
            "https://2130706433/x",
            "https://localhost/x",
            "https://api.localhost./x",
            "https://10.1.2.3/x",
            "https://172.16.0.1/x",
            "https://192.168.1.1/x",
            "https://169.254.169.254/latest/meta-data/",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "ftp://uploads.example.com/x",
        ] {
            let url = Url::parse(refused).unwrap();
            assert!(transfer_refusal(&url, false).is_some(), "{refused}");
        }
        for allowed in [
            "https://uploads.example.com/x?X-Amz-Signature=s",
            "https://52.95.110.1/x",
            "https://[2600:1f18::1]/x",
        ] {
            let url = Url::parse(allowed).unwrap();
            assert_eq!(transfer_refusal(&url, false), None, "{allowed}");
        }
        // Local runs: the stand-in's own URLs, plain or TLS, on loopback,
        // on a private network, or by name.
        for local in [
            "http://127.0.0.1:8080/u",
            "https://localhost:8443/u",
            "https://10.0.0.1/u",
            "http://172.18.0.3:8080/u",
            "http://169.254.1.1/u",
            "http://s3.localhost.localstack.cloud:4566/b/k?X-Amz-Signature=s",
        ] {
            assert_eq!(
                transfer_refusal(&Url::parse(local).unwrap(), true),
                None,
                "{local}"
            );
        }
        for refused in ["file:///etc/passwd", "ftp://127.0.0.1/u", "data:,x"] {
            assert!(
                transfer_refusal(&Url::parse(refused).unwrap(), true).is_some(),
                "{refused}"
            );
        }
    }

    #[tokio::test]
    async fn names_that_resolve_inside_are_refused() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(PublicOnly.resolve(name).await.is_err());
    }
}
