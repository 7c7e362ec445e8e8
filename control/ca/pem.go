package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParseBundle parses a trust bundle: one or more PEM CERTIFICATE blocks,
// each a CA certificate. Anything else in the input is an error, so a key
// pasted into a bundle by mistake is caught rather than ignored.
func ParseBundle(pemBytes []byte) ([]*x509.Certificate, error) {
	certs, key, err := parseCertsAndKey(pemBytes)
	if err != nil {
		return nil, err
	}
	if key != nil {
		return nil, errors.New("a trust bundle must not contain a private key")
	}
	if len(certs) == 0 {
		return nil, errors.New("no CERTIFICATE block")
	}
	for i, c := range certs {
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("certificate %d (%s) is not a CA", i+1, c.Subject)
		}
	}
	return certs, nil
}

// EncodeCertificates returns certs as concatenated PEM CERTIFICATE blocks.
func EncodeCertificates(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// parseCertsAndKey reads every PEM block of b: certificates in order and at
// most one private key. Unknown block types and trailing garbage are errors.
func parseCertsAndKey(b []byte) (certs []*x509.Certificate, key crypto.Signer, err error) {
	rest := b
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
			}
			certs = append(certs, c)
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
			if key != nil {
				return nil, nil, errors.New("more than one private key")
			}
			if key, err = parseKey(block); err != nil {
				return nil, nil, err
			}
		default:
			return nil, nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, nil, errors.New("data that is not PEM after the last block")
	}
	return certs, key, nil
}

func parseKey(block *pem.Block) (crypto.Signer, error) {
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", k)
	}
	return s, nil
}
