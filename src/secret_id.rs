//! Secret names and ARNs: the one rule for what may name a secret, shared
//! by the configuration (`P1_*_SECRET_ID`, the retrain prefix) and by a
//! request's `target_secret_id`, and the one test of whether two ids name
//! the same secret.
//!
//! The characters are Secrets Manager's own. Anything else could only fail
//! later, after a key was issued, or name a secret in a way that
//! [`same_secret`] would not recognise.

/// Secrets Manager's limit on a secret name.
pub const MAX_NAME_LEN: usize = 512;
/// Secrets Manager's limit on a secret id (an ARN).
pub const MAX_ID_LEN: usize = 2048;

/// The rule in words, for error messages.
pub const RULE: &str = "a secret name (1 to 512 of A-Z a-z 0-9 / _ + = . @ -) or a secret ARN of at most 2048 characters";

fn name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b)
}

/// A Secrets Manager secret name, or an ARN of one.
pub fn is_valid(id: &str) -> bool {
    if let Some(rest) = id.strip_prefix("arn:") {
        id.len() <= MAX_ID_LEN
            && !rest.is_empty()
            && rest.bytes().all(|b| name_char(b) || b == b':')
    } else {
        is_valid_name(id)
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(name_char)
}

/// A prefix that, followed by any id of `suffix_len` name characters, is
/// still a valid secret name.
pub fn is_valid_prefix(prefix: &str, suffix_len: usize) -> bool {
    !prefix.starts_with("arn:")
        && prefix.len() + suffix_len <= MAX_NAME_LEN
        && prefix.bytes().all(name_char)
}

/// The secret's name: the id itself, or an ARN's resource name without its
/// six-character suffix (the whole resource when it has none).
pub fn name_of(id: &str) -> &str {
    let Some(resource) = id
        .strip_prefix("arn:")
        .and_then(|rest| rest.split_once(":secret:"))
        .map(|(_, resource)| resource)
    else {
        return id;
    };
    match resource.rsplit_once('-') {
        Some((name, suffix)) if suffix.len() == 6 => name,
        _ => resource,
    }
}

/// Whether two ids (names or ARNs) name the same secret. An ARN ends in the
/// secret's name and a six-character random suffix (`...:secret:NAME-AbCdEf`),
/// so a name matches an ARN whose resource is that name plus the suffix.
pub fn same_secret(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.starts_with("arn:"), b.starts_with("arn:")) {
        (true, false) => name_of(a) == b,
        (false, true) => name_of(b) == a,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        for ok in [
            "p1/secret-key",
            "a",
            "team/p1+x=y.z@w_v-u",
            &"x".repeat(512),
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:team/p1-key-AbCdEf",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            " p1/x",
            "p1/x ",
            &"x".repeat(513),
            "arn:",
            "arn:aws:secretsmanager:x:1:secret:a b",
            &format!("arn:{}", "x".repeat(2045)),
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_leave_room_for_the_id() {
        assert!(is_valid_prefix("prediction-one/api-key/retrain/", 64));
        assert!(is_valid_prefix(&"p".repeat(448), 64));
        assert!(!is_valid_prefix(&"p".repeat(449), 64));
        assert!(!is_valid_prefix("retrain keys/", 64));
        assert!(!is_valid_prefix("arn:aws:secretsmanager:x:1:secret:p/", 64));
    }

    #[test]
    fn same_secret_by_name_or_arn() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:p1/secret-key-AbCdEf";
        assert!(same_secret("p1/secret-key", "p1/secret-key"));
        assert!(same_secret(arn, "p1/secret-key"));
        assert!(same_secret("p1/secret-key", arn));
        assert!(same_secret(arn, arn));
        assert!(!same_secret("p1/secret", arn));
        assert!(!same_secret("p1/secret-key-AbCdEf", "p1/secret-key"));
        assert!(!same_secret(arn, &arn.replace("AbCdEf", "XyZabc")));
    }

    #[test]
    fn names_of_ids() {
        assert_eq!(name_of("p1/x"), "p1/x");
        assert_eq!(
            name_of("arn:aws:secretsmanager:eu-west-1:1:secret:p1/secret-key-AbCdEf"),
            "p1/secret-key"
        );
        assert_eq!(
            name_of("arn:aws:secretsmanager:eu-west-1:1:secret:p1/x"),
            "p1/x"
        );
    }
}
