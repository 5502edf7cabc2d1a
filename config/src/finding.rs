//! Validation findings: what is wrong, where, and how bad.
//!
//! Every finding prints as `file:line: Kind namespace/name: field.path: message [CODE]`
//! (`../shared/spec/reason-codes.md`). Codes are stable: scripts match on them. Warnings carry
//! `warning: ` at the start of the message and never fail a load unless the caller is strict.

use std::fmt;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The object (and so the whole load) is rejected.
    Error,
    /// Reported; the object is accepted.
    Warning,
}

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $sev:ident,)*) => {
        /// A stable reason code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(non_camel_case_types)]
        pub enum Code { $($(#[$doc])* $name,)* }

        impl Code {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The code as printed, e.g. `SE_NO_HOSTS`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => stringify!($name),)* }
            }

            /// Whether the code is an error or a warning.
            pub fn severity(self) -> Severity {
                match self { $(Code::$name => Severity::$sev,)* }
            }
        }
    };
}

codes! {
    /// YAML syntax or decode error (wrong type, duplicate key, not UTF-8).
    YAML_PARSE = Error,
    /// The object has no `spec`.
    SPEC_REQUIRED = Error,
    /// The object has no `metadata.name`.
    NAME_REQUIRED = Error,
    /// A document has no `kind`.
    KIND_REQUIRED = Error,
    /// A known kind with an apiVersion that is not served.
    API_VERSION_UNSUPPORTED = Error,
    /// A field the schema does not have.
    UNKNOWN_FIELD = Error,
    /// A document of a kind the proxy does not use; ignored.
    UNKNOWN_KIND = Warning,
    /// The same kind/namespace/name twice; the later document wins.
    DUPLICATE_OBJECT = Warning,
    /// A valid field the proxy accepts but does not act on.
    IGNORED_FIELD = Warning,
    /// A deprecated field that is honoured.
    DEPRECATED_FIELD = Warning,
    /// A certificate, key or CA file that does not exist (yet).
    FILE_NOT_FOUND = Warning,
    /// A port the proxy itself uses; not served.
    RESERVED_PORT = Warning,
    /// The port-name protocol prefix disagrees with `protocol`.
    PORT_NAME_PROTOCOL_MISMATCH = Warning,
    /// A collection longer than the CRD allows.
    LIMIT_EXCEEDED = Error,

    SE_NO_HOSTS = Error,
    SE_HOST_FULL_WILDCARD = Error,
    SE_HOST_INVALID = Error,
    SE_HOST_PARTIAL_WILDCARD = Warning,
    SE_ADDRESS_INVALID = Error,
    SE_CIDR_RESOLUTION = Error,
    SE_PORT_NULL = Error,
    SE_PORT_NAME_DUP = Error,
    SE_PORT_NUMBER_DUP = Error,
    SE_PORT_RANGE = Error,
    SE_PORT_NAME_INVALID = Error,
    SE_PROTOCOL_UNSUPPORTED = Error,
    /// UDP ports validate but are never proxied.
    SE_UDP_PORT = Warning,
    SE_TCP_NO_ADDRESS = Warning,
    SE_NONE_WITH_ENDPOINTS = Error,
    SE_NONE_WITH_SELECTOR = Warning,
    SE_ENDPOINT_NULL = Error,
    SE_STATIC_ENDPOINT_NOT_IP = Error,
    SE_ENDPOINT_PORT_UNDEFINED = Error,
    SE_ENDPOINT_PORT_INVALID = Error,
    SE_ENDPOINT_LABEL_INVALID = Error,
    SE_ENDPOINT_ADDRESS_REQUIRED = Error,
    SE_ENDPOINT_NETWORK_ONLY = Warning,
    SE_UDS_PATH = Error,
    SE_UDS_PORTS = Error,
    SE_UDS_ONE_PORT = Error,
    SE_DNS_HOST_NOT_FQDN = Error,
    SE_DNS_ENDPOINT_INVALID = Error,
    SE_DNS_RR_MULTI_ENDPOINT = Error,
    SE_DNS_WILDCARD = Warning,
    SE_DYNAMIC_DNS_INVALID = Error,
    SE_MULTIHOST_ADDR_TCP = Warning,
    SE_MULTIHOST_NON_HTTP_TLS = Error,
    SE_SELECTOR_AND_ENDPOINTS = Error,
    SE_SELECTOR_EMPTY_KEY = Error,
    SE_SELECTOR_WILDCARD = Error,
    SE_SELECTOR_NO_LABELS = Warning,
    SE_RESOLUTION_UNSUPPORTED = Error,
    SE_LOCATION_UNSUPPORTED = Error,

    EXPORTTO_DUP = Error,
    EXPORTTO_PUBLIC_MIX = Error,
    EXPORTTO_NONE_MIX = Error,
    EXPORTTO_INVALID = Error,

    VS_NO_HOSTS = Error,
    VS_HOST_INVALID = Error,
    VS_HOST_FULL_WILDCARD = Error,
    VS_HOST_DUP = Error,
    VS_NO_ROUTES = Error,
    /// Bound only to gateways other than `mesh`: does not apply to this proxy.
    VS_NOT_FOR_MESH = Warning,
    VS_STRING_MATCH_INVALID = Error,
    VS_REGEX_INVALID = Error,
    VS_HEADER_NAME_INVALID = Error,
    VS_PORT_RANGE = Error,
    VS_ROUTE_REQUIRED = Error,
    VS_ROUTE_CONFLICT = Error,
    VS_DESTINATION_REQUIRED = Error,
    VS_DESTINATION_HOST_INVALID = Error,
    VS_WEIGHT_NEGATIVE = Error,
    VS_WEIGHT_TOTAL_ZERO = Error,
    VS_DURATION_INVALID = Error,
    VS_RETRY_INVALID = Error,
    VS_RETRY_ON_INVALID = Error,
    VS_FAULT_EMPTY = Error,
    VS_FAULT_PERCENTAGE = Error,
    VS_FAULT_STATUS = Error,
    VS_FAULT_UNSUPPORTED = Error,
    VS_FAULT_NO_ERROR = Warning,
    VS_FAULT_NO_DELAY = Error,
    VS_REWRITE_CONFLICT = Error,
    VS_REDIRECT_INVALID = Error,
    VS_DIRECT_RESPONSE_INVALID = Error,
    VS_HEADER_OP_INVALID = Error,
    VS_TLS_MATCH_REQUIRED = Error,
    VS_TLS_ROUTE_REQUIRED = Error,
    VS_TLS_SNI_REQUIRED = Error,
    VS_TLS_SNI_NOT_SUBSET = Error,
    VS_TLS_SNI_IP = Warning,
    VS_TCP_ROUTE_REQUIRED = Error,
    VS_SUBNET_INVALID = Error,

    DR_HOST_REQUIRED = Error,
    DR_HOST_INVALID = Error,
    DR_TRAFFIC_POLICY_EMPTY = Error,
    DR_PORT_REQUIRED = Error,
    DR_SUBSET_INVALID = Error,
    DR_TLS_MODE_UNSUPPORTED = Error,
    DR_TLS_CERT_REQUIRED = Error,
    DR_TLS_KEY_REQUIRED = Error,
    DR_TLS_CREDENTIAL_CONFLICT = Error,
    DR_TLS_INSECURE_CONFLICT = Error,
    DR_TLS_ISTIO_MUTUAL = Warning,
    DR_TLS_CREDENTIAL_NAME = Warning,
    DR_CONNECTION_POOL_INVALID = Error,
    DR_OUTLIER_INVALID = Error,
    DR_LOAD_BALANCER_INVALID = Error,
    DR_DURATION_INVALID = Error,

    MESH_POLICY_INVALID = Error,
    MESH_DURATION_INVALID = Error,
    MESH_INVALID = Error,
}

/// The kind of a configuration object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `ServiceEntry`
    ServiceEntry,
    /// `VirtualService`
    VirtualService,
    /// `DestinationRule`
    DestinationRule,
    /// The `--mesh` document.
    MeshConfig,
}

impl Kind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServiceEntry => "ServiceEntry",
            Self::VirtualService => "VirtualService",
            Self::DestinationRule => "DestinationRule",
            Self::MeshConfig => "MeshConfig",
        }
    }
}

/// kind/namespace/name of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace (`default` when absent).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// Where in the sources something came from: file, document, and (inside a `kind: List`) item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Origin {
    /// Index of the file in the sources given to the loader.
    pub file: usize,
    /// Index of the YAML document in the file.
    pub doc: usize,
    /// Index in `items` when the object came from a `kind: List`.
    pub item: Option<usize>,
}

/// One problem (or warning) found while loading or validating.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Reason code.
    pub code: Code,
    /// File name as given.
    pub file: String,
    /// 1-based line; the closest line known for the field path.
    pub line: usize,
    /// The object concerned, when known.
    pub object: Option<ObjectKey>,
    /// Field path such as `spec.ports[1].name`; empty for the whole document.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
    /// Where the finding came from (for line resolution).
    pub origin: Origin,
}

impl Finding {
    /// Error or warning, from the code.
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    /// Whether this finding rejects the load.
    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line.max(1))?;
        match &self.object {
            Some(key) => write!(f, "{key}: ")?,
            None => f.write_str("-: ")?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        if self.severity() == Severity::Warning {
            f.write_str("warning: ")?;
        }
        write!(f, "{} [{}]", self.message, self.code.as_str())
    }
}

/// Collects findings for one object, prefixing the object's identity and origin.
#[derive(Debug)]
pub struct Findings<'a> {
    out: &'a mut Vec<Finding>,
    file: &'a str,
    origin: Origin,
    object: Option<&'a ObjectKey>,
    errors: usize,
}

impl<'a> Findings<'a> {
    /// A collector writing into `out`.
    pub fn new(
        out: &'a mut Vec<Finding>,
        file: &'a str,
        origin: Origin,
        object: Option<&'a ObjectKey>,
    ) -> Self {
        Self {
            out,
            file,
            origin,
            object,
            errors: 0,
        }
    }

    /// Record a finding at `path`.
    pub fn push(&mut self, code: Code, path: impl Into<String>, message: impl Into<String>) {
        if code.severity() == Severity::Error {
            self.errors += 1;
        }
        self.out.push(Finding {
            code,
            file: self.file.to_owned(),
            line: 0,
            object: self.object.cloned(),
            path: path.into(),
            message: message.into(),
            origin: self.origin,
        });
    }

    /// Record a finding whose line is already known (syntax errors).
    pub fn push_at_line(&mut self, code: Code, line: usize, message: impl Into<String>) {
        self.push(code, "", message);
        if let Some(f) = self.out.last_mut() {
            f.line = line.max(1);
        }
    }

    /// Errors recorded through this collector.
    pub fn errors(&self) -> usize {
        self.errors
    }
}
