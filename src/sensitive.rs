//! Values that must never be printed: the Prediction One secret key, the API
//! keys it issues, the vendor's pre-signed URLs, Step Functions task tokens
//! and Secrets Manager rotation tokens.
//!
//! Each is a newtype whose `Debug` and `Display` print a fixed placeholder, so
//! a stray `{:?}` in a log line, an error or a panic cannot leak it. The raw
//! value is reachable through one explicit method, `expose()`, which is easy
//! to grep for in review. They can be deserialized from events, but none
//! implements `Serialize`: the only places
//! that write a raw value (the stored record, the vendor header, the SFN
//! callback) call `expose()` on purpose.

use std::fmt;

macro_rules! sensitive {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The raw value. Call it only where the value must leave the
            /// process on purpose (a vendor header, a stored record, an SDK call).
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(<redacted>)"))
            }
        }

        /// Read from events (a rotation token arrives in the payload);
        /// never serialized back out.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }
    };
}

sensitive!(
    /// The long-lived Prediction One secret key, good only for the Get API Key call.
    SecretKey
);
sensitive!(
    /// A short-lived Prediction One API key, as issued by the vendor.
    ApiKey
);
sensitive!(
    /// A Step Functions `.waitForTaskToken` token: whoever holds it can
    /// complete the task, so it is a credential.
    TaskToken
);
sensitive!(
    /// The `RotationToken` Secrets Manager passes to a rotation function.
    RotationToken
);
sensitive!(
    /// A pre-signed URL the vendor hands out for the training data (upload)
    /// or the results (download): the URL itself is the credential.
    PresignedUrl
);
sensitive!(
    /// A SecretString as read from or written to Secrets Manager: it holds
    /// the secret key or a stored API key record.
    SecretString
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let key = SecretKey::new("sk-SENTINEL-123");
        let api = ApiKey::new("ak-SENTINEL-456");
        let token = TaskToken::new("tt-SENTINEL-789");
        for printed in [
            format!("{key:?} {key} {api:?} {api} {token:?} {token}"),
            format!("{:?}", Some((&key, &api))),
        ] {
            assert!(!printed.contains("SENTINEL"), "leaked: {printed}");
        }
        assert_eq!(key.expose(), "sk-SENTINEL-123");
        assert_eq!(format!("{key:?}"), "SecretKey(<redacted>)");
    }
}
