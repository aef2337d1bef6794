//! Everything that lives in Secrets Manager.
//!
//! - [`store`]: the port, a thin view of the Secrets Manager calls this
//!   function makes, with errors typed by what callers decide on, so the
//!   use case runs against a fake in unit tests.
//! - [`aws`]: the AWS SDK adapter behind that port.
//! - [`record`]: the stored API key record (SPEC section 4).

pub mod aws;
pub mod record;
pub mod store;

pub use record::KeyRecord;
pub use store::{
    BatchValues, ListFilter, ListedSecret, NewSecret, NewVersion, SecretDescription, SecretPage,
    SecretStore, SecretValue, StoreError, VersionRef, new_version_id, renewal_token,
};

/// The staging label on the version currently served to readers.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The label Secrets Manager rotation puts on the version being created.
pub const AWSPENDING: &str = "AWSPENDING";
/// Marks the version whose EventBridge announcement succeeded (SPEC section 5).
pub const P1ANNOUNCED: &str = "P1ANNOUNCED";
