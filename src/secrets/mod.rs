//! Everything that lives in Secrets Manager.
//!
//! - [`store`]: the port, a thin view of the Secrets Manager calls this
//!   function makes, so the broker and rotation logic could run against a
//!   fake in unit tests.
//! - [`aws`]: the AWS SDK adapter behind that port.
//! - [`record`]: the stored API key record (SPEC section 4).
//! - [`secret_key`]: the Prediction One secret key, read once and cached per
//!   warm instance.

pub mod aws;
pub mod record;
pub mod secret_key;
pub mod store;

pub use record::KeyRecord;
pub use secret_key::SecretKeySource;
pub use store::{SecretStore, SecretValue, StoreError, VersionRef};

/// The staging label on the version currently served to readers.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The label Secrets Manager rotation puts on the version being created.
pub const AWSPENDING: &str = "AWSPENDING";
/// Marks the version whose EventBridge announcement succeeded (SPEC section 5).
pub const P1ANNOUNCED: &str = "P1ANNOUNCED";
