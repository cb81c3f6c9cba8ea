//! KMIP requests and responses over mutually authenticated TLS.
//!
//! One [`Client`] serves one `kmip_hosts` group for a whole run: hosts are tried in order (as DSE
//! does) until one completes a TLS handshake, and that connection is reused for every request.
//! Each connect and each request has a deadline (the group's `timeout_ms`); a connection the
//! server dropped between requests is re-opened once for read-only requests. Responses are read
//! header first and refused above [`ttlv::MAX_MESSAGE`] before anything is allocated. Key material
//! only ever sits in zeroizing buffers and never appears in an error.

use crate::error::Malformed;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde::Serialize;
use zeroize::Zeroizing;

use super::config::GroupConfig;
use super::error::{ConnectError, KmipError};
use super::ttlv::{self, Item, ReadError, Value};
use super::{op, tag, State};
use crate::keys::KeyMaterial;

/// A batch item's failure, before it is tied to a key id.
#[derive(Debug, Clone)]
pub struct Failure {
    pub op: u32,
    pub reason: u32,
    pub message: String,
}

/// The attributes `kmip list` and the key-state rules need. Absent ones are `None`/empty (PyKMIP,
/// for one, does not track Activation Date or Protect Stop Date).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attributes {
    pub id: String,
    pub state: Option<State>,
    pub names: Vec<String>,
    pub object_type: Option<u32>,
    pub algorithm: Option<u32>,
    pub length: Option<i32>,
    pub initial_date: Option<i64>,
    pub activation_date: Option<i64>,
    pub protect_stop_date: Option<i64>,
    pub object_groups: Vec<String>,
    /// Cryptographic Usage Mask: asked only by ScyllaDB's Locate ([`USAGE_MASK`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_mask: Option<i32>,
    /// The custom text attribute `x-key-namespace` ([`KEY_NAMESPACE`]): asked only by
    /// ScyllaDB's Locate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_namespace: Option<String>,
}

/// The attribute name of the usage mask.
pub const USAGE_MASK: &str = "Cryptographic Usage Mask";
/// The custom attribute ScyllaDB stores a table's `key_namespace` in (FORMAT.md 4.4).
pub const KEY_NAMESPACE: &str = "x-key-namespace";

/// The attributes asked for in every Get Attributes.
pub const ATTRIBUTE_NAMES: &[&str] = &[
    "State",
    "Name",
    "Object Type",
    "Cryptographic Algorithm",
    "Cryptographic Length",
    "Initial Date",
    "Activation Date",
    "Protect Stop Date",
    "Object Group",
];

/// Vendor and operations a server reports (Query).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerInfo {
    pub vendor: Option<String>,
    pub operations: Vec<u32>,
}

/// `host[:port]`, port 5696 when absent; `[v6]:port` for IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, Malformed> {
        let s = s.trim();
        let bad = || Malformed(format!("{s:?} is not host[:port]"));
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(bad()),
            }
        } else if s.matches(':').count() == 1 {
            let (h, p) = s.split_once(':').unwrap();
            (h, Some(p))
        } else {
            (s, None)
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
            None => 5696,
        };
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

struct Conn {
    host: String,
    stream: StreamOwned<ClientConnection, TcpStream>,
}

/// A request's operation and payload children.
#[derive(Clone)]
pub struct Op {
    pub op: u32,
    pub payload: Vec<Item>,
}

/// A client for one group, holding at most one connection.
pub struct Client {
    group: String,
    hosts: Vec<Endpoint>,
    timeout: Duration,
    tls: Arc<ClientConfig>,
    ca: PathBuf,
    cert: PathBuf,
    conn: Option<Conn>,
}

impl Client {
    pub fn new(cfg: &GroupConfig) -> Result<Client, KmipError> {
        let hosts = cfg
            .hosts
            .iter()
            .map(|h| Endpoint::parse(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KmipError::Config(format!("KMIP group {}: {e}", cfg.name)))?;
        if hosts.is_empty() {
            return Err(KmipError::Config(format!(
                "KMIP group {}: no hosts",
                cfg.name
            )));
        }
        Ok(Client {
            group: cfg.name.clone(),
            hosts,
            timeout: cfg.timeout,
            tls: cfg.tls_config()?,
            ca: cfg.ca.clone(),
            cert: cfg.cert.clone(),
            conn: None,
        })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// The host of the open connection, if any.
    pub fn connected_to(&self) -> Option<&str> {
        self.conn.as_ref().map(|c| c.host.as_str())
    }

    /// Opens a connection to the first host that completes a TLS handshake.
    fn connect(&mut self) -> Result<(), KmipError> {
        let mut tried = Vec::new();
        for ep in self.hosts.clone() {
            match self.open(&ep) {
                Ok(stream) => {
                    self.conn = Some(Conn {
                        host: ep.to_string(),
                        stream,
                    });
                    return Ok(());
                }
                Err(why) => tried.push(format!("{ep}: {why}")),
            }
        }
        Err(KmipError::Unreachable {
            group: self.group.clone(),
            tried,
        })
    }

    fn open(
        &self,
        ep: &Endpoint,
    ) -> Result<StreamOwned<ClientConnection, TcpStream>, ConnectError> {
        let deadline = Instant::now() + self.timeout;
        let addrs: Vec<_> = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve the host name: {e}"))?
            .collect();
        let mut sock = None;
        let mut last = String::from("no address");
        for a in addrs {
            let left = remaining(deadline).ok_or_else(|| self.timed_out("while connecting"))?;
            match TcpStream::connect_timeout(&a, left) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) if is_timeout(&e) => last = self.timed_out("while connecting"),
                Err(e) => last = format!("cannot connect: {e}"),
            }
        }
        let sock = sock.ok_or(last)?;
        let _ = sock.set_nodelay(true);
        let name = ServerName::try_from(ep.host.clone())
            .map_err(|_| format!("{:?} is not a valid host name", ep.host))?;
        let conn =
            ClientConnection::new(self.tls.clone(), name).map_err(|e| format!("TLS setup: {e}"))?;
        let mut stream = StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            let left =
                remaining(deadline).ok_or_else(|| self.timed_out("during the TLS handshake"))?;
            set_timeouts(&stream.sock, left).map_err(|e| format!("socket: {e}"))?;
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                return Err(ConnectError(self.describe_tls(
                    &e,
                    "during the TLS handshake",
                    ep,
                )));
            }
        }
        Ok(stream)
    }

    fn timed_out(&self, what: &str) -> String {
        format!(
            "no answer within {} ms {what} (timeout_ms)",
            self.timeout.as_millis()
        )
    }

    /// Says what a TLS-level failure most likely means for the operator.
    fn describe_tls(&self, e: &io::Error, when: &str, ep: &Endpoint) -> String {
        use rustls::{AlertDescription as A, CertificateError as C, Error as T};
        if is_timeout(e) {
            return self.timed_out(when);
        }
        let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<T>()) else {
            return match e.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted => format!(
                    "the server closed the connection {when}: it may not accept our client certificate {}, or not speak TLS on this port",
                    self.cert.display()
                ),
                _ => format!("{when}: {e}"),
            };
        };
        match t {
            T::InvalidCertificate(C::UnknownIssuer | C::BadSignature | C::BadEncoding) => format!(
                "the server's certificate is not issued by the CA in {} (check `ca`; or this is not the server you meant)",
                self.ca.display()
            ),
            T::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
                "the server's certificate does not name {} (its subject alternative names must include this host name or IP address)",
                ep.host
            ),
            T::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                "the server's certificate has expired".to_string()
            }
            T::InvalidCertificate(other) => format!("the server's certificate is not acceptable: {other:?}"),
            T::AlertReceived(
                a @ (A::BadCertificate
                | A::UnknownCA
                | A::CertificateUnknown
                | A::CertificateRequired
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::AccessDenied
                | A::DecryptError
                | A::HandshakeFailure),
            ) => format!(
                "the server refused the connection (TLS alert {a:?}): it does not accept our client certificate {} (is it issued by a CA the server trusts?), or we share no TLS version/cipher",
                self.cert.display()
            ),
            other => format!("TLS {when}: {other}"),
        }
    }

    /// Sends `ops` as one batch and returns each item's payload or failure, in order.
    /// `read_only` requests are re-sent once on a fresh connection if the reused one was dropped.
    ///
    /// We ask the server to continue past a failed item, but a server may still stop at the first
    /// failure (KMIP's default) and leave the rest unanswered; the unanswered items of a read-only
    /// batch are then sent again (each round answers at least one, so this ends). A batch that
    /// changes state is never re-sent: its unanswered items are a protocol error.
    pub fn call(
        &mut self,
        ops: &[Op],
        read_only: bool,
    ) -> Result<Vec<Result<Item, Failure>>, KmipError> {
        let mut answers: Answers = (0..ops.len()).map(|_| None).collect();
        loop {
            let pending: Vec<usize> = (0..ops.len()).filter(|&i| answers[i].is_none()).collect();
            let batch: Vec<Op> = pending.iter().map(|&i| ops[i].clone()).collect();
            let got = self.send(&batch, read_only)?;
            let progress = got.iter().any(Option::is_some);
            for (i, a) in pending.into_iter().zip(got) {
                answers[i] = a;
            }
            if let Some(missing) = answers.iter().position(Option::is_none) {
                if read_only && progress {
                    continue;
                }
                return Err(KmipError::Protocol {
                    group: self.group.clone(),
                    host: self.connected_to().unwrap_or_default().to_string(),
                    msg: format!("no answer for batch item {missing}"),
                });
            }
            return Ok(answers.into_iter().flatten().collect());
        }
    }

    /// One request and its response: per op its answer, `None` where the server gave none.
    fn send(&mut self, ops: &[Op], read_only: bool) -> Result<Answers, KmipError> {
        let req = request(ops).encode();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let fresh = self.conn.is_none();
            if fresh {
                self.connect()?;
            }
            match self.exchange(&req) {
                Ok(buf) => {
                    let host = self
                        .conn
                        .as_ref()
                        .map(|c| c.host.clone())
                        .unwrap_or_default();
                    return parse_response(&buf, ops).map_err(|msg| KmipError::Protocol {
                        group: self.group.clone(),
                        host,
                        msg: msg.into(),
                    });
                }
                Err((e, transient)) => {
                    let host = self.conn.take().map(|c| c.host).unwrap_or_default();
                    // A reused connection the server closed while idle: reconnect once.
                    if transient && !fresh && read_only && attempt < 2 {
                        continue;
                    }
                    return Err(match e {
                        ReadError::Ttlv(t) => KmipError::Protocol {
                            group: self.group.clone(),
                            host,
                            msg: t.to_string(),
                        },
                        ReadError::Io(io) => KmipError::Transport {
                            group: self.group.clone(),
                            host: host.clone(),
                            msg: self.describe_io(&io, &host),
                        },
                    });
                }
            }
        }
    }

    fn describe_io(&self, e: &io::Error, host: &str) -> String {
        if is_timeout(e) {
            return self.timed_out("waiting for the response");
        }
        if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
            let ep = Endpoint::parse(host).unwrap_or(Endpoint {
                host: host.into(),
                port: 0,
            });
            return self.describe_tls(e, "during the request", &ep);
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                "the connection closed before a whole response arrived (truncated response)".into()
            }
            _ => format!("connection failed during the request: {e}"),
        }
    }

    /// Writes the request and reads one response; the error says whether a retry may help.
    fn exchange(&mut self, req: &[u8]) -> Result<Zeroizing<Vec<u8>>, (ReadError, bool)> {
        let deadline = Instant::now() + self.timeout;
        let c = self.conn.as_mut().expect("connected");
        let s = &mut c.stream;
        let timeout = |what| {
            (
                ReadError::Io(io::Error::new(io::ErrorKind::TimedOut, what)),
                false,
            )
        };
        let left = remaining(deadline).ok_or_else(|| timeout("write"))?;
        set_timeouts(&s.sock, left).map_err(|e| (ReadError::Io(e), false))?;
        if let Err(e) = s.write_all(req).and_then(|()| s.flush()) {
            let transient = is_transient(&e);
            return Err((ReadError::Io(e), transient));
        }
        let mut r = DeadlineRead {
            s,
            deadline,
            got: 0,
        };
        match ttlv::read_message(&mut r, tag::RESPONSE_MESSAGE) {
            Ok(b) => Ok(b),
            Err(ReadError::Io(e)) => {
                // Only a connection that yielded nothing was plausibly closed while idle.
                let transient = r.got == 0 && is_transient(&e);
                Err((ReadError::Io(e), transient))
            }
            Err(e) => Err((e, false)),
        }
    }

    // --- operations --------------------------------------------------------------------------

    fn failed(&self, f: Failure, id: Option<&str>) -> KmipError {
        KmipError::Failed {
            group: self.group.clone(),
            op: op::name(f.op),
            id: id.map(str::to_string),
            reason: f.reason,
            message: f.message,
        }
    }

    fn unusable(&self, msg: String) -> KmipError {
        KmipError::Unusable {
            group: self.group.clone(),
            msg,
        }
    }

    fn one(&mut self, o: Op, read_only: bool, id: Option<&str>) -> Result<Item, KmipError> {
        let mut r = self.call(&[o], read_only)?;
        r.pop()
            .expect("one result per op")
            .map_err(|f| self.failed(f, id))
    }

    /// Query: the server's vendor and operations.
    pub fn query(&mut self) -> Result<ServerInfo, KmipError> {
        let p = self.one(
            Op {
                op: op::QUERY,
                payload: vec![
                    Item::enumeration(tag::QUERY_FUNCTION, 1),
                    Item::enumeration(tag::QUERY_FUNCTION, 3),
                ],
            },
            true,
            None,
        )?;
        Ok(ServerInfo {
            vendor: p
                .child(tag::VENDOR_IDENTIFICATION)
                .and_then(Item::as_text)
                .map(str::to_string),
            operations: p.all(tag::OPERATION).filter_map(Item::as_enum).collect(),
        })
    }

    /// Get Attributes of several keys in one request; per key its attributes or the failure.
    pub fn attributes(
        &mut self,
        ids: &[String],
    ) -> Result<Vec<Result<Attributes, KmipError>>, KmipError> {
        self.attributes_with(ids, &[])
    }

    /// [`Client::attributes`], asking also for the attributes named in `extra`.
    pub fn attributes_with(
        &mut self,
        ids: &[String],
        extra: &[&str],
    ) -> Result<Vec<Result<Attributes, KmipError>>, KmipError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ops: Vec<Op> = ids.iter().map(|id| get_attributes_op(id, extra)).collect();
        let res = self.call(&ops, true)?;
        Ok(res
            .into_iter()
            .zip(ids)
            .map(|(r, id)| match r {
                Ok(p) => parse_attributes(&p, id).map_err(|m| self.unusable(m.into())),
                Err(f) => Err(self.failed(f, Some(id))),
            })
            .collect())
    }

    /// Get Attributes and Get (Raw) of one key in a single request. The attributes must succeed;
    /// the key itself may still be refused (some servers refuse Get on revoked keys).
    pub fn fetch(
        &mut self,
        id: &str,
    ) -> Result<(Attributes, Result<KeyMaterial, KmipError>), KmipError> {
        let ops = [
            get_attributes_op(id, &[]),
            Op {
                op: op::GET,
                payload: vec![
                    Item::text(tag::UNIQUE_IDENTIFIER, id),
                    Item::enumeration(tag::KEY_FORMAT_TYPE, super::KEY_FORMAT_RAW),
                ],
            },
        ];
        let mut res = self.call(&ops, true)?.into_iter();
        let attrs = match res.next().expect("two results") {
            Ok(p) => parse_attributes(&p, id).map_err(|m| self.unusable(m.into()))?,
            Err(f) => return Err(self.failed(f, Some(id))),
        };
        let key = match res.next().expect("two results") {
            Ok(p) => parse_key(&p, id).map_err(|m| self.unusable(m.into())),
            Err(f) => Err(self.failed(f, Some(id))),
        };
        Ok((attrs, key))
    }

    /// Locate by attributes (each an Attribute structure, see [`attribute`]).
    pub fn locate(&mut self, attributes: Vec<Item>) -> Result<Vec<String>, KmipError> {
        let p = self.one(
            Op {
                op: op::LOCATE,
                payload: attributes,
            },
            true,
            None,
        )?;
        Ok(p.all(tag::UNIQUE_IDENTIFIER)
            .filter_map(Item::as_text)
            .map(str::to_string)
            .collect())
    }

    /// Create an AES key (Encrypt|Decrypt) and Activate it. `texts`: further attributes with a
    /// text value (name, value), e.g. [`KEY_NAMESPACE`].
    pub fn create_aes(
        &mut self,
        bits: u32,
        name: Option<&str>,
        texts: &[(&str, &str)],
    ) -> Result<String, KmipError> {
        let mut template = vec![
            attribute(
                "Cryptographic Algorithm",
                Value::Enumeration(super::ALGORITHM_AES),
            ),
            attribute("Cryptographic Length", Value::Integer(bits as i32)),
            attribute(
                "Cryptographic Usage Mask",
                Value::Integer(super::USAGE_ENCRYPT | super::USAGE_DECRYPT),
            ),
        ];
        for (n, v) in texts {
            template.push(attribute(n, Value::Text((*v).to_string())));
        }
        if let Some(n) = name {
            template.push(attribute(
                "Name",
                Value::Structure(vec![
                    Item::text(tag::NAME_VALUE, n),
                    Item::enumeration(tag::NAME_TYPE, super::NAME_TYPE_TEXT),
                ]),
            ));
        }
        // Two requests: an Activate relying on the ID Placeholder of a batched Create is valid
        // KMIP, but PyKMIP 0.11 cannot parse an Activate without a Unique Identifier.
        let created = self.one(
            Op {
                op: op::CREATE,
                payload: vec![
                    Item::enumeration(tag::OBJECT_TYPE, super::OBJECT_TYPE_SYMMETRIC_KEY),
                    Item::structure(tag::TEMPLATE_ATTRIBUTE, template),
                ],
            },
            false,
            None,
        )?;
        let id = created
            .child(tag::UNIQUE_IDENTIFIER)
            .and_then(Item::as_text)
            .ok_or_else(|| self.unusable("Create answered no Unique Identifier".into()))?
            .to_string();
        self.one(
            Op {
                op: op::ACTIVATE,
                payload: vec![Item::text(tag::UNIQUE_IDENTIFIER, &id)],
            },
            false,
            Some(&id),
        )
        .map_err(|e| {
            self.unusable(format!(
                "created key {id} but could not activate it ({e}); activate or destroy it on the server"
            ))
        })?;
        Ok(id)
    }

    /// Revoke with a reason code (Key Compromise → Compromised, others → Deactivated).
    pub fn revoke(
        &mut self,
        id: &str,
        reason: u32,
        message: Option<&str>,
    ) -> Result<(), KmipError> {
        let mut rr = vec![Item::enumeration(tag::REVOCATION_REASON_CODE, reason)];
        if let Some(m) = message {
            rr.push(Item::text(tag::REVOCATION_MESSAGE, m));
        }
        let mut payload = vec![
            Item::text(tag::UNIQUE_IDENTIFIER, id),
            Item::structure(tag::REVOCATION_REASON, rr),
        ];
        if reason == super::RevokeReason::Compromise.code() {
            payload.push(Item::date_time(tag::COMPROMISE_OCCURRENCE_DATE, now_secs()));
        }
        self.one(
            Op {
                op: op::REVOKE,
                payload,
            },
            false,
            Some(id),
        )?;
        Ok(())
    }

    pub fn destroy(&mut self, id: &str) -> Result<(), KmipError> {
        self.one(
            Op {
                op: op::DESTROY,
                payload: vec![Item::text(tag::UNIQUE_IDENTIFIER, id)],
            },
            false,
            Some(id),
        )?;
        Ok(())
    }
}

impl Drop for Client {
    /// Says goodbye (close_notify) so that servers log a clean end of session; best effort.
    fn drop(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = c
                .stream
                .sock
                .set_write_timeout(Some(Duration::from_millis(200)));
            c.stream.conn.send_close_notify();
            let _ = c.stream.conn.write_tls(&mut c.stream.sock);
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `Attribute { Attribute Name, Attribute Value }`.
pub fn attribute(name: &str, value: Value) -> Item {
    Item::structure(
        tag::ATTRIBUTE,
        vec![
            Item::text(tag::ATTRIBUTE_NAME, name),
            Item::new(tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

fn get_attributes_op(id: &str, extra: &[&str]) -> Op {
    let mut payload = vec![Item::text(tag::UNIQUE_IDENTIFIER, id)];
    payload.extend(
        ATTRIBUTE_NAMES
            .iter()
            .chain(extra)
            .map(|n| Item::text(tag::ATTRIBUTE_NAME, *n)),
    );
    Op {
        op: op::GET_ATTRIBUTES,
        payload,
    }
}

/// The request message for a batch of operations (KMIP 1.2).
pub fn request(ops: &[Op]) -> Item {
    let mut header = vec![
        Item::structure(
            tag::PROTOCOL_VERSION,
            vec![
                Item::integer(tag::PROTOCOL_VERSION_MAJOR, 1),
                Item::integer(tag::PROTOCOL_VERSION_MINOR, 2),
            ],
        ),
        Item::integer(tag::BATCH_COUNT, ops.len() as i32),
    ];
    if ops.len() > 1 {
        // Answer every item even when one fails (a key deleted between Locate and Get
        // Attributes must not hide the others). KMIP allows the option only in batches.
        header.insert(
            1,
            Item::enumeration(tag::BATCH_ERROR_CONTINUATION_OPTION, super::BATCH_CONTINUE),
        );
    }
    let mut items = vec![Item::structure(tag::REQUEST_HEADER, header)];
    for (i, o) in ops.iter().enumerate() {
        let mut bi = vec![Item::enumeration(tag::OPERATION, o.op)];
        if ops.len() > 1 {
            bi.push(Item::bytes(
                tag::UNIQUE_BATCH_ITEM_ID,
                &(i as u32).to_be_bytes(),
            ));
        }
        bi.push(Item::structure(tag::REQUEST_PAYLOAD, o.payload.clone()));
        items.push(Item::structure(tag::BATCH_ITEM, bi));
    }
    Item::structure(tag::REQUEST_MESSAGE, items)
}

/// Per requested op, the server's answer; `None` where it gave none.
pub type Answers = Vec<Option<Result<Item, Failure>>>;

/// Splits a response into one answer per requested op (by Unique Batch Item ID when present,
/// else by position). A single failed item without a Batch Item ID answers the whole batch
/// (a message-level failure) and applies to every op.
pub fn parse_response(buf: &[u8], ops: &[Op]) -> Result<Answers, Malformed> {
    let msg = Item::decode(buf).map_err(|e| e.to_string())?;
    if msg.tag != tag::RESPONSE_MESSAGE {
        return Err(Malformed(format!(
            "top-level tag {:06X} is not a Response Message",
            msg.tag
        )));
    }
    if msg.child(tag::RESPONSE_HEADER).is_none() {
        return Err("no Response Header".into());
    }
    let items: Vec<&Item> = msg.all(tag::BATCH_ITEM).collect();
    let mut out: Vec<Option<Result<Item, Failure>>> = (0..ops.len()).map(|_| None).collect();
    for (pos, bi) in items.iter().enumerate() {
        let status = bi
            .child(tag::RESULT_STATUS)
            .and_then(Item::as_enum)
            .ok_or("a Batch Item without a Result Status")?;
        let batch_id = bi.child(tag::UNIQUE_BATCH_ITEM_ID).and_then(Item::as_bytes);
        let slot = match batch_id {
            Some(b) if b.len() == 4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
            _ => pos,
        };
        let result = if status == super::RESULT_SUCCESS {
            Ok(bi
                .child(tag::RESPONSE_PAYLOAD)
                .cloned()
                .unwrap_or_else(|| Item::structure(tag::RESPONSE_PAYLOAD, vec![])))
        } else {
            Err(Failure {
                op: bi
                    .child(tag::OPERATION)
                    .and_then(Item::as_enum)
                    .or_else(|| ops.get(slot).map(|o| o.op))
                    .unwrap_or(0),
                reason: bi
                    .child(tag::RESULT_REASON)
                    .and_then(Item::as_enum)
                    .unwrap_or(0),
                message: bi
                    .child(tag::RESULT_MESSAGE)
                    .and_then(Item::as_text)
                    .map(|m| m.chars().take(500).collect())
                    .unwrap_or_default(),
            })
        };
        if items.len() == 1 && ops.len() > 1 && batch_id.is_none() {
            if let Err(f) = &result {
                return Ok(ops
                    .iter()
                    .map(|o| {
                        Some(Err(Failure {
                            op: o.op,
                            ..f.clone()
                        }))
                    })
                    .collect());
            }
        }
        match out.get_mut(slot) {
            Some(s @ None) => *s = Some(result),
            _ => return Err(Malformed(format!("unexpected Batch Item {slot}"))),
        }
    }
    Ok(out)
}

pub fn parse_attributes(payload: &Item, id: &str) -> Result<Attributes, Malformed> {
    let mut a = Attributes {
        id: payload
            .child(tag::UNIQUE_IDENTIFIER)
            .and_then(Item::as_text)
            .unwrap_or(id)
            .to_string(),
        ..Default::default()
    };
    for at in payload.all(tag::ATTRIBUTE) {
        let (Some(name), Some(v)) = (
            at.child(tag::ATTRIBUTE_NAME).and_then(Item::as_text),
            at.child(tag::ATTRIBUTE_VALUE),
        ) else {
            continue;
        };
        let bad = || format!("key {id}: attribute {name:?} has an unexpected type ({v:?})");
        match name {
            "State" => a.state = Some(State::from_code(v.as_enum().ok_or_else(bad)?)),
            "Name" => a.names.push(
                v.child(tag::NAME_VALUE)
                    .and_then(Item::as_text)
                    .ok_or_else(bad)?
                    .to_string(),
            ),
            "Object Type" => a.object_type = Some(v.as_enum().ok_or_else(bad)?),
            "Cryptographic Algorithm" => a.algorithm = Some(v.as_enum().ok_or_else(bad)?),
            "Cryptographic Length" => a.length = Some(v.as_int().ok_or_else(bad)?),
            "Initial Date" => a.initial_date = Some(v.as_date_time().ok_or_else(bad)?),
            "Activation Date" => a.activation_date = Some(v.as_date_time().ok_or_else(bad)?),
            "Protect Stop Date" => a.protect_stop_date = Some(v.as_date_time().ok_or_else(bad)?),
            "Object Group" => a
                .object_groups
                .push(v.as_text().ok_or_else(bad)?.to_string()),
            USAGE_MASK => a.usage_mask = Some(v.as_int().ok_or_else(bad)?),
            KEY_NAMESPACE => a.key_namespace = Some(v.as_text().ok_or_else(bad)?.to_string()),
            _ => {}
        }
    }
    Ok(a)
}

/// The raw bytes of a Get response's Symmetric Key (Key Format Type Raw, not wrapped).
pub fn parse_key(payload: &Item, id: &str) -> Result<KeyMaterial, Malformed> {
    let ot = payload.child(tag::OBJECT_TYPE).and_then(Item::as_enum);
    let sk = payload.child(tag::SYMMETRIC_KEY).ok_or_else(|| {
        format!(
            "object {id} is not a symmetric key (Object Type {})",
            ot.map(|t| t.to_string()).unwrap_or_else(|| "absent".into())
        )
    })?;
    let kb = sk
        .child(tag::KEY_BLOCK)
        .ok_or_else(|| format!("key {id}: Get answered no Key Block"))?;
    if let Some(f) = kb.child(tag::KEY_FORMAT_TYPE).and_then(Item::as_enum) {
        if f != super::KEY_FORMAT_RAW {
            return Err(Malformed(format!(
                "key {id}: the server sent Key Format Type {f:#x}, not Raw"
            )));
        }
    }
    let kv = kb
        .child(tag::KEY_VALUE)
        .ok_or_else(|| format!("key {id}: Get answered no Key Value"))?;
    let km = kv
        .child(tag::KEY_MATERIAL)
        .and_then(Item::as_bytes)
        .ok_or_else(|| {
            format!("key {id}: the key is wrapped or not raw bytes; ask for it unwrapped")
        })?;
    if let Some(a) = kb
        .child(tag::CRYPTOGRAPHIC_ALGORITHM)
        .and_then(Item::as_enum)
    {
        if a != super::ALGORITHM_AES {
            return Err(Malformed(format!(
                "key {id} is a {} key, not AES",
                super::algorithm_name(a)
            )));
        }
    }
    if let Some(l) = kb.child(tag::CRYPTOGRAPHIC_LENGTH).and_then(Item::as_int) {
        if l as i64 != km.len() as i64 * 8 {
            return Err(Malformed(format!(
                "key {id}: Cryptographic Length {l} but {} bits of key material",
                km.len() * 8
            )));
        }
    }
    Ok(KeyMaterial::new(km.clone()))
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (left > Duration::ZERO).then_some(left)
}

fn set_timeouts(s: &TcpStream, d: Duration) -> io::Result<()> {
    s.set_read_timeout(Some(d))?;
    s.set_write_timeout(Some(d))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Reads with the socket's timeout shrunk to what is left of the request's deadline, so that a
/// server dripping one byte at a time cannot hold us past it.
struct DeadlineRead<'a> {
    s: &'a mut StreamOwned<ClientConnection, TcpStream>,
    deadline: Instant,
    got: usize,
}

impl Read for DeadlineRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = remaining(self.deadline)
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "deadline"))?;
        self.s.sock.set_read_timeout(Some(left))?;
        let n = self.s.read(buf)?;
        self.got += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let p = |s| Endpoint::parse(s);
        assert_eq!(
            p("kms1.example:5697").unwrap(),
            Endpoint {
                host: "kms1.example".into(),
                port: 5697
            }
        );
        assert_eq!(p("kms1").unwrap().port, 5696);
        assert_eq!(p("[::1]:15696").unwrap().host, "::1");
        assert_eq!(p("::1").unwrap().host, "::1");
        assert!(p("kms:0").is_err());
        assert!(p("kms:x").is_err());
        assert!(p("").is_err());
        assert_eq!(p("[::1]:1").unwrap().to_string(), "[::1]:1");
    }

    #[test]
    fn batch_request_shape() {
        let ops = [get_attributes_op("7", &[]), get_attributes_op("8", &[])];
        let m = request(&ops);
        let h = m.child(tag::REQUEST_HEADER).unwrap();
        assert_eq!(h.child(tag::BATCH_COUNT).unwrap().as_int(), Some(2));
        assert_eq!(
            h.child(tag::BATCH_ERROR_CONTINUATION_OPTION)
                .and_then(Item::as_enum),
            Some(super::super::BATCH_CONTINUE)
        );
        assert_eq!(m.all(tag::BATCH_ITEM).count(), 2);
        // A single op is no batch: no continuation option (KMIP allows it only in batches).
        let one = request(&ops[..1]);
        let h = one.child(tag::REQUEST_HEADER).unwrap();
        assert!(h.child(tag::BATCH_ERROR_CONTINUATION_OPTION).is_none());
        // Round trip through the codec.
        assert_eq!(Item::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn responses_map_to_their_batch_items() {
        let ops = [get_attributes_op("7", &[]), get_attributes_op("8", &[])];
        let bi = |id: u32, ok: bool| {
            let mut c = vec![
                Item::enumeration(tag::OPERATION, op::GET_ATTRIBUTES),
                Item::bytes(tag::UNIQUE_BATCH_ITEM_ID, &id.to_be_bytes()),
                Item::enumeration(tag::RESULT_STATUS, if ok { 0 } else { 1 }),
            ];
            if ok {
                c.push(Item::structure(
                    tag::RESPONSE_PAYLOAD,
                    vec![
                        Item::text(tag::UNIQUE_IDENTIFIER, "7"),
                        attribute("State", Value::Enumeration(2)),
                    ],
                ));
            } else {
                c.push(Item::enumeration(tag::RESULT_REASON, 1));
                c.push(Item::text(
                    tag::RESULT_MESSAGE,
                    "Could not locate object: 8",
                ));
            }
            Item::structure(tag::BATCH_ITEM, c)
        };
        let resp = Item::structure(
            tag::RESPONSE_MESSAGE,
            vec![
                Item::structure(tag::RESPONSE_HEADER, vec![]),
                bi(1, false),
                bi(0, true),
            ],
        );
        let r = parse_response(&resp.encode(), &ops).unwrap();
        let a = parse_attributes(r[0].as_ref().unwrap().as_ref().unwrap(), "7").unwrap();
        assert_eq!(a.state, Some(State::Active));
        assert_eq!(r[1].as_ref().unwrap().as_ref().unwrap_err().reason, 1);
        // A server that stops at a failed item leaves the rest unanswered: `None`, which the
        // caller sends again. The failure is the first item's only, not the whole batch's.
        let stopped = Item::structure(
            tag::RESPONSE_MESSAGE,
            vec![Item::structure(tag::RESPONSE_HEADER, vec![]), bi(0, false)],
        );
        let r = parse_response(&stopped.encode(), &ops).unwrap();
        assert!(matches!(r[0], Some(Err(_))));
        assert!(r[1].is_none());
        // A lone failure without a Batch Item ID is a message-level failure: every op's.
        let mut whole = bi(0, false);
        if let Value::Structure(c) = &mut whole.value {
            c.retain(|i| i.tag != tag::UNIQUE_BATCH_ITEM_ID);
        }
        let whole = Item::structure(
            tag::RESPONSE_MESSAGE,
            vec![Item::structure(tag::RESPONSE_HEADER, vec![]), whole],
        );
        let r = parse_response(&whole.encode(), &ops).unwrap();
        assert!(r.iter().all(|a| matches!(a, Some(Err(_)))));
        // Duplicates are protocol errors, not panics.
        let dup = Item::structure(
            tag::RESPONSE_MESSAGE,
            vec![
                Item::structure(tag::RESPONSE_HEADER, vec![]),
                bi(0, true),
                bi(0, true),
            ],
        );
        assert!(parse_response(&dup.encode(), &ops).is_err());
    }

    #[test]
    fn key_material_checks() {
        let key = |alg: u32, len: i32, n: usize| {
            Item::structure(
                tag::RESPONSE_PAYLOAD,
                vec![
                    Item::enumeration(tag::OBJECT_TYPE, 2),
                    Item::structure(
                        tag::SYMMETRIC_KEY,
                        vec![Item::structure(
                            tag::KEY_BLOCK,
                            vec![
                                Item::enumeration(tag::KEY_FORMAT_TYPE, 1),
                                Item::structure(
                                    tag::KEY_VALUE,
                                    vec![Item::bytes(tag::KEY_MATERIAL, &vec![0x5A; n])],
                                ),
                                Item::enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, alg),
                                Item::integer(tag::CRYPTOGRAPHIC_LENGTH, len),
                            ],
                        )],
                    ),
                ],
            )
        };
        assert_eq!(parse_key(&key(3, 128, 16), "k").unwrap().bits(), 128);
        for bad in [key(2, 128, 16), key(3, 256, 16)] {
            let e = parse_key(&bad, "k").err().unwrap();
            assert!(!e.contains("5a") && !e.contains("90"), "{e}");
        }
    }

    /// Bytes PyKMIP 0.11 itself encodes (`tools/kmip_admin.py DIR capture`): our Get request is
    /// byte-identical, and its Get and failure responses decode to what they say.
    #[test]
    fn pykmip_captured_bytes() {
        fn unhex(s: &str) -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        }
        let get_request = concat!(
            "42007801000000804200770100000038420069010000002042006a0200000004",
            "000000010000000042006b0200000004000000020000000042000d0200000004",
            "000000010000000042000f010000003842005c05000000040000000a00000000",
            "4200790100000020420094070000000234320000000000004200420500000004",
            "0000000100000000",
        );
        let get_response = concat!(
            "42007b010000010042007a0100000048420069010000002042006a0200000004",
            "000000010000000042006b020000000400000002000000004200920900000008",
            "000000005e0be10042000d0200000004000000010000000042000f01000000a8",
            "42005c05000000040000000a0000000042007f05000000040000000000000000",
            "42007c0100000080420057050000000400000002000000004200940700000002",
            "343200000000000042008f010000005842004001000000504200420500000004",
            "0000000100000000420045010000001842004308000000100001020304050607",
            "08090a0b0c0d0e0f4200280500000004000000030000000042002a0200000004",
            "0000008000000000",
        );
        let not_found = concat!(
            "42007b01000000b042007a0100000048420069010000002042006a0200000004",
            "000000010000000042006b020000000400000002000000004200920900000008",
            "000000005e0be10042000d0200000004000000010000000042000f0100000058",
            "42005c05000000040000000a0000000042007f05000000040000000100000000",
            "42007e0500000004000000010000000042007d070000001b436f756c64206e6f",
            "74206c6f63617465206f626a6563743a2034320000000000",
        );
        let ops = [Op {
            op: op::GET,
            payload: vec![
                Item::text(tag::UNIQUE_IDENTIFIER, "42"),
                Item::enumeration(tag::KEY_FORMAT_TYPE, super::super::KEY_FORMAT_RAW),
            ],
        }];
        assert_eq!(request(&ops).encode(), unhex(get_request));
        let r = parse_response(&unhex(get_response), &ops).unwrap();
        let key = parse_key(r[0].as_ref().unwrap().as_ref().unwrap(), "42").unwrap();
        assert_eq!(key.expose(), (0u8..16).collect::<Vec<_>>());
        let r = parse_response(&unhex(not_found), &ops).unwrap();
        let f = r[0].as_ref().unwrap().as_ref().unwrap_err();
        assert_eq!(
            (f.op, f.reason),
            (op::GET, super::super::REASON_ITEM_NOT_FOUND)
        );
        assert_eq!(f.message, "Could not locate object: 42");
        assert_eq!(
            Item::long(0x420000, 123456789000000000).encode(),
            unhex("420000030000000801b69b4ba5749200")
        );
        assert_eq!(
            Item::boolean(0x420000, true).encode(),
            unhex("42000006000000080000000000000001")
        );
        assert_eq!(
            Item::interval(0x420000, 864000).encode(),
            unhex("4200000a00000004000d2f0000000000")
        );
    }
}
