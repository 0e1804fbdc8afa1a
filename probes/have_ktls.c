/*
 * configure probe: the kernel's TLS offload (kTLS) in the Linux headers,
 * with TLS 1.3, ChaCha20-Poly1305 and the record-type cmsgs (Linux 5.11).
 * Compiled, never run: whether the running kernel has the "tls" ULP is
 * probed at run time (tls.c).
 */
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <linux/tls.h>

int main(void)
{
	struct tls12_crypto_info_aes_gcm_128 a = {
		.info = { .version = TLS_1_3_VERSION,
			  .cipher_type = TLS_CIPHER_AES_GCM_128 },
	};
	struct tls12_crypto_info_aes_gcm_256 b = {
		.info = { .cipher_type = TLS_CIPHER_AES_GCM_256 },
	};
	struct tls12_crypto_info_chacha20_poly1305 c = {
		.info = { .cipher_type = TLS_CIPHER_CHACHA20_POLY1305 },
	};
	int k[] = { TCP_ULP, SOL_TLS, TLS_TX, TLS_RX, TLS_SET_RECORD_TYPE,
		    TLS_GET_RECORD_TYPE, TLS_1_2_VERSION };

	return a.iv[0] + b.salt[0] + c.rec_seq[0] + k[0];
}
