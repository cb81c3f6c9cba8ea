//! Test-only reference: single-stream AES-CBC with PKCS#7 (= PKCS#5 for 16-byte blocks) from the
//! RustCrypto `cbc` crate, independent of this crate's kernels. Every accelerated path is compared
//! byte for byte against these.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};

/// `E(key, iv, plain)` with padding; `key` is 16, 24 or 32 bytes.
pub fn cbc_encrypt(key: &[u8], iv: &[u8; 16], plain: &[u8]) -> Vec<u8> {
    match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
            .unwrap()
            .encrypt_padded_vec::<Pkcs7>(plain),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, iv)
            .unwrap()
            .encrypt_padded_vec::<Pkcs7>(plain),
        32 => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .unwrap()
            .encrypt_padded_vec::<Pkcs7>(plain),
        n => panic!("a {n}-byte key is not an AES key"),
    }
}

/// `D(key, iv, ct)` without the padding; panics on bad padding.
pub fn cbc_decrypt(key: &[u8], iv: &[u8; 16], ct: &[u8]) -> Vec<u8> {
    match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .unwrap()
            .decrypt_padded_vec::<Pkcs7>(ct)
            .unwrap(),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .unwrap()
            .decrypt_padded_vec::<Pkcs7>(ct)
            .unwrap(),
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .unwrap()
            .decrypt_padded_vec::<Pkcs7>(ct)
            .unwrap(),
        n => panic!("a {n}-byte key is not an AES key"),
    }
}
