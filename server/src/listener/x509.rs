//! The two fields of an X.509 certificate the relay's log shows: the subject's common name and
//! the end of validity (`notAfter`). A small DER walk over the fixed start of the certificate
//! (RFC 5280, 4.1), so no X.509 crate is built for a log line; anything it does not expect
//! gives `None`, never a panic.

use std::time::{SystemTime, UNIX_EPOCH};

/// DER tags used here.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` of `TBSCertificate`.
const VERSION: u8 = 0xA0;
/// The object identifier 2.5.4.3 (commonName), as encoded.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// What the log says about a certificate besides its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validity {
    /// The subject's common name (CN), if it has one.
    pub subject_cn: Option<String>,
    /// The end of validity as `YYYY-MM-DD HH:MM:SS UTC`.
    pub not_after: Option<String>,
    /// Whether `not_after` has passed.
    pub expired: bool,
}

/// Reads the subject CN and `notAfter` of a DER certificate.
pub fn validity(der: &[u8]) -> Validity {
    read(der).unwrap_or_default()
}

fn read(der: &[u8]) -> Option<Validity> {
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, validity, rest) = element(rest)? else {
        return None;
    };
    // notBefore, then notAfter.
    let (tag, not_after, _) = element(element(validity)?.2)?;
    let digits = time_digits(tag, not_after)?;
    let (SEQUENCE, subject, _) = element(rest)? else {
        return None;
    };
    Some(Validity {
        subject_cn: common_name(subject),
        not_after: Some(format!(
            "{}-{}-{} {}:{}:{} UTC",
            &digits[0..4],
            &digits[4..6],
            &digits[6..8],
            &digits[8..10],
            &digits[10..12],
            &digits[12..14]
        )),
        expired: digits < now_digits(),
    })
}

/// One DER element of `input`: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// A UTCTime or GeneralizedTime as `YYYYMMDDHHMMSS`.
fn time_digits(tag: u8, value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match (tag, digits.len()) {
        // RFC 5280, 4.1.2.5.1: YY from 50 is 19YY, else 20YY.
        (UTC_TIME, 12) => {
            let century = if digits < "50" { "20" } else { "19" };
            Some(format!("{century}{digits}"))
        }
        (GENERALIZED_TIME, 14) => Some(digits.to_owned()),
        _ => None,
    }
}

/// The first common name in a `Name`.
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (tag, set, rest) = element(name)?;
        name = rest;
        if tag != SET {
            return None;
        }
        let (SEQUENCE, attribute, _) = element(set)? else {
            return None;
        };
        let (OID, oid, value) = element(attribute)? else {
            return None;
        };
        if oid == COMMON_NAME {
            let (_, text, _) = element(value)?;
            return Some(String::from_utf8_lossy(text).into_owned());
        }
    }
    None
}

/// The current time as `YYYYMMDDHHMMSS` (UTC).
fn now_digits() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let (year, month, day) = civil_from_days(days);
    let rest = secs % 86_400;
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn certificate(cn: &str, not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["relay.test".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "AetherFlow");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_subject_and_end_of_validity_are_read_and_a_past_end_is_expired() {
        let later = validity(&certificate("relay.test", (2099, 12, 31)));
        assert_eq!(later.subject_cn.as_deref(), Some("relay.test"));
        assert_eq!(later.not_after.as_deref(), Some("2099-12-31 00:00:00 UTC"));
        assert!(!later.expired);
        let past = validity(&certificate("old", (2021, 3, 4)));
        assert_eq!(past.not_after.as_deref(), Some("2021-03-04 00:00:00 UTC"));
        assert!(past.expired);
    }

    #[test]
    fn truncated_or_foreign_bytes_give_nothing_and_never_panic() {
        let der = certificate("relay.test", (2099, 1, 1));
        for end in 0..der.len() {
            let _ = validity(&der[..end]);
        }
        assert_eq!(validity(b"not a certificate"), Validity::default());
        assert_eq!(
            validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            Validity::default()
        );
    }

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
