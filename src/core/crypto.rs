//! Signatures: what ties a record to the node that made it.
//!
//! A node id *is* an ed25519 public key, so a record signed by its origin
//! can be checked by any node that receives it, however many peers relayed
//! it. The engine signs through [`Keys`] and checks through it too, which
//! keeps the core sans-IO: the libp2p node passes [`Ed25519Keys`] built
//! from its identity; the deterministic simulator passes [`SimulatedKeys`],
//! a cheap model of signatures over its synthetic ids.
//!
//! What is signed is a domain-separated encoding of every field that
//! defines the record (see [`member_claim`] and [`version_claim`]), so a
//! signature for one kind of record never verifies as another.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dots::{Context, Dot};
use super::hlc::Hlc;
use super::ids::{byte_array, NodeId, StateKey};
use super::membership::NodeInfo;
use super::state::Payload;

/// Length of a signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// An ed25519 signature (or, in the simulator, its model).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Encoded as a byte string (one length prefix and the 64 bytes).
impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        byte_array::<D, SIGNATURE_LEN>(d, "64 bytes of a signature").map(Signature)
    }
}

/// What signs this node's records and checks its peers'.
pub trait Keys: Send + Sync + fmt::Debug {
    /// This node's id (its public key).
    fn id(&self) -> NodeId;
    /// Sign `msg` as this node.
    fn sign(&self, msg: &[u8]) -> Signature;
    /// Whether `sig` is `signer`'s signature over `msg`.
    fn verify(&self, signer: &NodeId, msg: &[u8], sig: &Signature) -> bool;
}

/// Shared handle to a node's keys (the engine and its driver both hold it).
pub type SharedKeys = Arc<dyn Keys>;

/// Real ed25519 keys: the node's secret key; peers' public keys are their
/// node ids.
pub struct Ed25519Keys {
    key: ed25519_dalek::SigningKey,
    id: NodeId,
}

impl Ed25519Keys {
    /// The keys of the node whose 32-byte ed25519 secret is `secret`.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(&secret);
        let id = NodeId(key.verifying_key().to_bytes());
        Ed25519Keys { key, id }
    }
}

impl fmt::Debug for Ed25519Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Keys")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Keys for Ed25519Keys {
    fn id(&self) -> NodeId {
        self.id
    }

    fn sign(&self, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer as _;
        Signature(self.key.sign(msg).to_bytes())
    }

    fn verify(&self, signer: &NodeId, msg: &[u8], sig: &Signature) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&signer.0) else {
            return false;
        };
        key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .is_ok()
    }
}

/// Modelled signatures for the deterministic simulator and tests, over
/// synthetic ids ([`NodeId::from_index`]) that are not public keys: a keyed
/// hash of the signer and the message under a secret of the simulated
/// world. Any code holding the world secret can make one for any id, so
/// this models an adversary only as long as the simulated liars sign with
/// their own keys; never use it outside a simulation.
#[derive(Clone, Debug)]
pub struct SimulatedKeys {
    id: NodeId,
    world: u64,
}

impl SimulatedKeys {
    /// The keys of `id` in the world with secret `world`.
    pub fn new(id: NodeId, world: u64) -> Self {
        SimulatedKeys { id, world }
    }

    fn mac(&self, signer: &NodeId, msg: &[u8]) -> Signature {
        let mut out = [0u8; SIGNATURE_LEN];
        for (i, chunk) in out.chunks_mut(16).enumerate() {
            let mut h = xxhash_rust::xxh3::Xxh3::with_seed(self.world ^ (i as u64).wrapping_mul(0x9e37_79b9));
            h.update(&signer.0);
            h.update(msg);
            chunk.copy_from_slice(&h.digest128().to_le_bytes());
        }
        Signature(out)
    }
}

impl Keys for SimulatedKeys {
    fn id(&self) -> NodeId {
        self.id
    }

    fn sign(&self, msg: &[u8]) -> Signature {
        self.mac(&self.id, msg)
    }

    fn verify(&self, signer: &NodeId, msg: &[u8], sig: &Signature) -> bool {
        self.mac(signer, msg) == *sig
    }
}

/// Simulated keys for the unit tests of the core (world secret 1).
#[cfg(test)]
pub(crate) fn test_keys(id: NodeId) -> SharedKeys {
    Arc::new(SimulatedKeys::new(id, 1))
}

const MEMBER_DOMAIN: &[u8] = b"starling/member/1";
const VERSION_DOMAIN: &[u8] = b"starling/version/1";

fn encode(out: &mut Vec<u8>, value: &impl Serialize) {
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
        .expect("encoding into a Vec cannot fail");
}

/// What a node signs to declare itself a member: its id, self-description
/// and incarnation, and whether it is alive or has left. Records of it as
/// suspect or dead carry its alive claim at the same incarnation, so
/// nobody can declare it anything at an incarnation it never had.
pub fn member_claim(node: &NodeId, info: &NodeInfo, incarnation: u64, left: bool) -> Vec<u8> {
    let mut out = MEMBER_DOMAIN.to_vec();
    encode(&mut out, &(node, info, incarnation, left));
    out
}

/// What the origin of a version signs: the key, the dot, the causal
/// context, the stamp, the whole payload and its checksum.
pub fn version_claim(
    key: &StateKey,
    dot: &Dot,
    ctx: &Context,
    hlc: &Hlc,
    payload: &Payload,
    checksum: u64,
) -> Vec<u8> {
    let mut out = VERSION_DOMAIN.to_vec();
    encode(&mut out, &(key, dot, ctx, hlc, payload, checksum));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ed25519_signature_verifies_for_its_signer_and_message_only() {
        let a = Ed25519Keys::from_secret([7; 32]);
        let b = Ed25519Keys::from_secret([8; 32]);
        let sig = a.sign(b"hello");
        assert!(b.verify(&a.id(), b"hello", &sig), "anyone checks a's signature");
        assert!(!b.verify(&a.id(), b"hellO", &sig), "another message");
        assert!(!a.verify(&b.id(), b"hello", &sig), "another signer");
        let mut bent = sig;
        bent.0[10] ^= 1;
        assert!(!b.verify(&a.id(), b"hello", &bent), "a changed signature");
        assert!(
            !a.verify(&NodeId([0xff; 32]), b"hello", &sig),
            "an id that is no public key verifies nothing"
        );
    }

    #[test]
    fn simulated_signatures_verify_for_their_signer_and_message_only() {
        let a = SimulatedKeys::new(NodeId::from_index(1), 42);
        let b = SimulatedKeys::new(NodeId::from_index(2), 42);
        let sig = a.sign(b"m");
        assert!(b.verify(&a.id(), b"m", &sig));
        assert!(!b.verify(&a.id(), b"n", &sig));
        assert!(!b.verify(&b.id(), b"m", &sig));
        let elsewhere = SimulatedKeys::new(NodeId::from_index(2), 43);
        assert!(!elsewhere.verify(&a.id(), b"m", &sig), "another world's key");
    }

    #[test]
    fn a_member_claim_of_alive_is_not_one_of_left() {
        let n = NodeId::from_index(1);
        let info = NodeInfo::default();
        assert_ne!(
            member_claim(&n, &info, 3, false),
            member_claim(&n, &info, 3, true)
        );
        assert_ne!(
            member_claim(&n, &info, 3, false),
            member_claim(&n, &info, 4, false)
        );
    }
}
