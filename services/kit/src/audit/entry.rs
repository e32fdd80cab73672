//! Entries, blocks, and the bytes their hashes and signatures cover.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What kind of processing an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A gRPC call the writer served.
    Call,
    /// An event delivery the writer handled.
    Delivery,
}

impl EntryKind {
    /// As it is hashed and shown: `call` or `delivery`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Delivery => "delivery",
        }
    }
}

/// One processing of one person's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the writer's chain, from 1.
    pub seq: u64,
    /// When, RFC 3339 in UTC.
    pub at: String,
    /// The service that processed the data (and wrote the entry).
    pub writer: String,
    /// A call or an event delivery.
    pub kind: EntryKind,
    /// Who asked: the calling service (from its certificate), the application the gateway
    /// called for, or the event's publisher.
    pub requester: String,
    /// The intermediary the call came through (`gateway` for an application's REST call),
    /// empty for a direct call or a delivery.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub via: String,
    /// The gRPC method (`package.Service/Method`), or the event type and the consumer.
    pub action: String,
    /// Why, as the access policy's grant or the consumer's declaration states.
    pub purpose: String,
    /// The person, as the keyed hash of [`super::subject`].
    pub subject: String,
    /// The W3C trace id of the call or event, empty if there was none.
    pub trace_id: String,
    /// The hash of the writer's previous entry ([`GENESIS`] for the first).
    pub prev: String,
    /// This entry's hash: SHA-256 over `prev` and every field above.
    pub hash: String,
}

impl Entry {
    /// The hash this entry should carry, computed from its fields.
    pub fn computed_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"govbus.audit.entry.v1\n");
        hasher.update(self.seq.to_be_bytes());
        for field in [
            self.prev.as_str(),
            self.at.as_str(),
            self.writer.as_str(),
            self.kind.as_str(),
            self.requester.as_str(),
            self.action.as_str(),
            self.purpose.as_str(),
            self.subject.as_str(),
            self.trace_id.as_str(),
        ] {
            // Length-prefixed, so no two different entries hash the same bytes.
            hasher.update(u64::try_from(field.len()).unwrap_or(u64::MAX).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        // Only when there is one, so that entries written before there were intermediaries
        // keep their hashes.
        if !self.via.is_empty() {
            hasher.update(b"via");
            hasher.update(
                u64::try_from(self.via.len())
                    .unwrap_or(u64::MAX)
                    .to_be_bytes(),
            );
            hasher.update(self.via.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

/// Entries a writer appended at once, signed with its certificate's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The writing service.
    pub writer: String,
    /// Consecutive entries of its chain.
    pub entries: Vec<Entry>,
    /// The writer's certificate (PEM), issued by the deployment's CA.
    pub certificate: String,
    /// The TLS signature scheme, e.g. `ECDSA_NISTP256_SHA256`.
    pub signature_scheme: String,
    /// The signature over [`Block::signed_bytes`], hexadecimal.
    pub signature: String,
    /// An RFC 3161 timestamp token of the deployment's time-stamping authority over the
    /// SHA-256 of [`Block::timestamped_bytes`] (DER, base64); empty when no authority was
    /// configured or none answered (see [`super::timestamp`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
}

impl Block {
    /// What the timestamp token vouches for: the signature's bytes (the signature covers the
    /// block), so the token proves the signed block existed at the stamped time.
    pub fn timestamped_bytes(&self) -> Vec<u8> {
        hex::decode(&self.signature).unwrap_or_default()
    }

    /// What the signature covers: the writer, the block's first and last sequence numbers and
    /// its last entry's hash (which, through the chain, covers every entry before it).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let first = self.entries.first().map_or(0, |entry| entry.seq);
        let (last, last_hash) = self
            .entries
            .last()
            .map_or((0, ""), |entry| (entry.seq, entry.hash.as_str()));
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(b"govbus.audit.block.v1\n");
        bytes.extend_from_slice(
            &u64::try_from(self.writer.len())
                .unwrap_or(u64::MAX)
                .to_be_bytes(),
        );
        bytes.extend_from_slice(self.writer.as_bytes());
        bytes.extend_from_slice(&first.to_be_bytes());
        bytes.extend_from_slice(&last.to_be_bytes());
        bytes.extend_from_slice(last_hash.as_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Change = Box<dyn Fn(&mut Entry)>;

    fn entry() -> Entry {
        let mut entry = Entry {
            seq: 1,
            at: "2026-11-28T01:02:03.000004Z".to_owned(),
            writer: "identity".to_owned(),
            kind: EntryKind::Call,
            requester: "welfare".to_owned(),
            via: String::new(),
            action: "govbus.identity.v1.IdentityService/VerifyCitizen".to_owned(),
            purpose: "eligibility".to_owned(),
            subject: "ab".repeat(32),
            trace_id: String::new(),
            prev: GENESIS.to_owned(),
            hash: String::new(),
        };
        entry.hash = entry.computed_hash();
        entry
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let original = entry();
        let mut changes: Vec<Change> = vec![
            Box::new(|e| e.seq = 2),
            Box::new(|e| e.at.push('0')),
            Box::new(|e| e.writer = "welfare".to_owned()),
            Box::new(|e| e.kind = EntryKind::Delivery),
            Box::new(|e| e.requester = "licensing".to_owned()),
            Box::new(|e| e.action.push('x')),
            Box::new(|e| e.purpose.clear()),
            Box::new(|e| e.subject = "cd".repeat(32)),
            Box::new(|e| e.trace_id = "1".repeat(32)),
            Box::new(|e| e.prev = "1".repeat(64)),
            Box::new(|e| e.via = "gateway".to_owned()),
        ];
        // Moving text between neighbouring fields must change the hash too.
        changes.push(Box::new(|e| {
            e.requester = "welfareeligibility".to_owned();
            e.purpose.clear();
        }));
        for change in changes {
            let mut changed = original.clone();
            change(&mut changed);
            assert_ne!(changed.computed_hash(), original.hash);
        }
        assert_eq!(original.computed_hash(), original.hash);
    }

    #[test]
    fn an_entry_without_an_intermediary_hashes_as_before_there_were_any() {
        // The hash of `entry()` as entries were hashed before `via` existed.
        let mut hasher = Sha256::new();
        hasher.update(b"govbus.audit.entry.v1\n");
        hasher.update(1_u64.to_be_bytes());
        let original = entry();
        for field in [
            original.prev.as_str(),
            original.at.as_str(),
            original.writer.as_str(),
            original.kind.as_str(),
            original.requester.as_str(),
            original.action.as_str(),
            original.purpose.as_str(),
            original.subject.as_str(),
            original.trace_id.as_str(),
        ] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        assert_eq!(original.hash, hex::encode(hasher.finalize()));
        let stored = serde_json::to_value(&original).expect("serialised");
        assert!(stored.get("via").is_none(), "{stored}");
    }
}
