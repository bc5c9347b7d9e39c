//! Classifying tracked opens and clicks: what a person did versus what a machine did.
//!
//! The rules and their sources are in docs/tracking.md. In short:
//! - **Opens**: Apple Mail Privacy Protection prefetches every image of every message
//!   through Apple's proxies (the iCloud Private Relay infrastructure), whether or not the
//!   recipient reads it: those loads are `machine_open`s. They are recognised by the proxy's
//!   bare `Mozilla/5.0` user agent and by Apple's egress networks (17.0.0.0/8 by default,
//!   plus any configured ranges such as Apple's published egress list). Gmail's and Yahoo's
//!   image proxies fetch when the person opens the mail: those are human opens.
//! - **Clicks**: corporate link scanners (Microsoft Defender Safe Links, Mimecast,
//!   Proofpoint, Barracuda, …) follow every link of a message, often within seconds of
//!   delivery and often with HEAD requests or non-browser agents: such clicks are
//!   `bot_click`s. The signals are: a known scanner or automation agent, a configured
//!   scanner network, a click within [`ClickRules::min_human_delay`] of sending, and a burst
//!   touching several distinct links of one message within [`ClickRules::burst_window`].
//!
//! Everything here is pure: the tracking handler and the recorder gather the signals.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What an open was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenClass {
    HumanOpen,
    MachineOpen,
}

/// What a click was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickClass {
    HumanClick,
    BotClick,
}

/// An IPv4 or IPv6 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::y/n` (a bare address is a /32 or /128).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = text.trim().parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One request to the open pixel.
#[derive(Debug, Clone, Copy)]
pub struct OpenSignals<'a> {
    pub user_agent: Option<&'a str>,
    pub ip: Option<IpAddr>,
}

/// One request to a click link, with what the recorder knows about the message.
#[derive(Debug, Clone, Copy)]
pub struct ClickSignals<'a> {
    pub user_agent: Option<&'a str>,
    pub ip: Option<IpAddr>,
    /// Whether the request was a HEAD (answered, never counted as a person).
    pub head: bool,
    /// Time from the message being sent to this click, when known.
    pub since_sent: Option<Duration>,
    /// Distinct links of the same message clicked within the burst window ending now,
    /// this one included.
    pub distinct_links_in_burst: u32,
}

/// Open rules: Apple's proxy networks (configurable).
#[derive(Debug, Clone)]
pub struct OpenRules {
    pub machine_networks: Vec<Cidr>,
}

impl Default for OpenRules {
    fn default() -> Self {
        OpenRules {
            // Apple's own /8 (ARIN: APPLE-WWNET); MPP's egress lies in it or in the
            // published Private Relay egress list, which can be added here.
            machine_networks: vec![Cidr::parse("17.0.0.0/8").expect("valid")],
        }
    }
}

impl OpenRules {
    pub fn classify(&self, s: &OpenSignals<'_>) -> OpenClass {
        let ua = s.user_agent.map(str::trim).unwrap_or("");
        // Apple's MPP proxy sends exactly "Mozilla/5.0"; real browsers and mail clients
        // always add a platform comment.
        if ua == "Mozilla/5.0" {
            return OpenClass::MachineOpen;
        }
        if let Some(ip) = s.ip
            && self.machine_networks.iter().any(|n| n.contains(ip))
        {
            return OpenClass::MachineOpen;
        }
        OpenClass::HumanOpen
    }
}

/// Click rules (configurable).
#[derive(Debug, Clone)]
pub struct ClickRules {
    /// A click sooner than this after sending is a scanner's (a person has not opened
    /// the mail yet).
    pub min_human_delay: Duration,
    /// Window in which several distinct links of one message count as a burst.
    pub burst_window: Duration,
    /// Distinct links within the window from which a burst is a scanner.
    pub burst_links: u32,
    /// Known scanner networks (e.g. a security vendor's published ranges).
    pub scanner_networks: Vec<Cidr>,
}

impl Default for ClickRules {
    fn default() -> Self {
        ClickRules {
            min_human_delay: Duration::from_secs(10),
            burst_window: Duration::from_secs(2),
            burst_links: 3,
            scanner_networks: Vec::new(),
        }
    }
}

/// Lowercase substrings of user agents that belong to scanners, crawlers and HTTP
/// libraries, never to a person's browser.
const BOT_AGENT_MARKERS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "scanner",
    "preview",
    "headless",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "curl/",
    "wget/",
    "java/",
    "okhttp",
    "libwww",
    "httpclient",
    "axios/",
    "node-fetch",
    "barracuda",
    "mimecast",
    "proofpoint",
    "urldefense",
    "safelinks",
    "forcepoint",
    "symantec",
    "trendmicro",
    "sophos",
    "fortinet",
    "cisco",
    "ironport",
    "zscaler",
    "microsoft office existence discovery",
    "ms-office",
    "skypeuripreview",
    "googleimageproxy",
];

/// Whether a user agent is a known automated client (or absent: every browser sends one).
pub fn is_automated_agent(user_agent: Option<&str>) -> bool {
    let Some(ua) = user_agent.map(str::trim).filter(|u| !u.is_empty()) else {
        return true;
    };
    let ua = ua.to_ascii_lowercase();
    BOT_AGENT_MARKERS.iter().any(|m| ua.contains(m))
}

impl ClickRules {
    pub fn classify(&self, s: &ClickSignals<'_>) -> ClickClass {
        let bot = s.head
            || is_automated_agent(s.user_agent)
            || s.ip
                .is_some_and(|ip| self.scanner_networks.iter().any(|n| n.contains(ip)))
            || s.since_sent.is_some_and(|d| d < self.min_human_delay)
            || s.distinct_links_in_burst >= self.burst_links;
        if bot {
            ClickClass::BotClick
        } else {
            ClickClass::HumanClick
        }
    }
}

/// What the tracking handler saw, handed to the recorder (the events queue's record).
/// The handler has verified the token; classification happens in the recorder, which
/// knows the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackEvent {
    /// `evt_…`, given by the handler: the recorder counts each id once.
    pub id: String,
    pub workspace_id: String,
    pub message_id: String,
    pub at: chrono::DateTime<chrono::Utc>,
    #[serde(flatten)]
    pub kind: TrackKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// An open or a click (link index and destination, from the verified token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrackKind {
    Open,
    Click { link: u32, url: String },
}

/// Longest user agent kept with an event (the rest is cut).
pub const MAX_USER_AGENT: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148";
    const GMAIL_PROXY: &str =
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn apple_proxy_opens_are_machine_gmail_proxy_opens_are_human() {
        let rules = OpenRules::default();
        let open = |ua, addr| {
            rules.classify(&OpenSignals {
                user_agent: ua,
                ip: addr,
            })
        };
        assert_eq!(
            open(Some("Mozilla/5.0"), ip("203.0.113.9")),
            OpenClass::MachineOpen
        );
        assert_eq!(open(Some(IPHONE), ip("17.58.4.1")), OpenClass::MachineOpen);
        assert_eq!(
            open(Some(IPHONE), ip("::ffff:17.58.4.1")),
            OpenClass::MachineOpen
        );
        assert_eq!(
            open(Some(GMAIL_PROXY), ip("66.249.84.1")),
            OpenClass::HumanOpen
        );
        assert_eq!(open(Some(IPHONE), ip("198.51.100.7")), OpenClass::HumanOpen);
        assert_eq!(open(None, None), OpenClass::HumanOpen);
    }

    #[test]
    fn scanner_clicks_are_bots_and_late_browser_clicks_are_human() {
        let rules = ClickRules {
            scanner_networks: vec![Cidr::parse("40.94.0.0/16").unwrap()],
            ..ClickRules::default()
        };
        let base = ClickSignals {
            user_agent: Some(CHROME),
            ip: ip("198.51.100.7"),
            head: false,
            since_sent: Some(Duration::from_secs(3600)),
            distinct_links_in_burst: 1,
        };
        assert_eq!(rules.classify(&base), ClickClass::HumanClick);
        assert_eq!(
            rules.classify(&ClickSignals { head: true, ..base }),
            ClickClass::BotClick
        );
        assert_eq!(
            rules.classify(&ClickSignals {
                user_agent: None,
                ..base
            }),
            ClickClass::BotClick
        );
        assert_eq!(
            rules.classify(&ClickSignals {
                user_agent: Some("python-requests/2.31"),
                ..base
            }),
            ClickClass::BotClick
        );
        assert_eq!(
            rules.classify(&ClickSignals {
                ip: ip("40.94.12.3"),
                ..base
            }),
            ClickClass::BotClick
        );
        assert_eq!(
            rules.classify(&ClickSignals {
                since_sent: Some(Duration::from_secs(2)),
                ..base
            }),
            ClickClass::BotClick
        );
        assert_eq!(
            rules.classify(&ClickSignals {
                distinct_links_in_burst: 3,
                ..base
            }),
            ClickClass::BotClick
        );
        assert_eq!(
            rules.classify(&ClickSignals {
                distinct_links_in_burst: 2,
                ..base
            }),
            ClickClass::HumanClick
        );
    }

    #[test]
    fn cidr_parsing_and_matching() {
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nonsense").is_none());
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = Cidr::parse("2620:149::/32").unwrap();
        assert!(v6.contains("2620:149:a:1::5".parse().unwrap()));
        assert!(!v6.contains("2620:150::1".parse().unwrap()));
        let host = Cidr::parse("192.0.2.1").unwrap();
        assert!(host.contains("192.0.2.1".parse().unwrap()));
        assert!(!host.contains("192.0.2.2".parse().unwrap()));
    }
}
