/* configure probe: OpenSSL's libssl, for TLS streams (Debian: libssl-dev). */
#include <openssl/bio.h>
#include <openssl/ssl.h>

int main(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	BIO *b = BIO_new(BIO_s_mem());

	BIO_free(b);
	SSL_CTX_free(ctx);
	return 0;
}
