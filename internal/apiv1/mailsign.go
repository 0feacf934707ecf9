package apiv1

// DKIMSignRequest is the body of POST /v1/mail/dkim-sign: what an agent's
// daemon sends to have its mail DKIM-signed, never the body itself.
type DKIMSignRequest struct {
	// Headers is the canonical header block: the header fields to sign in
	// relaxed canonical form ("name:value", RFC 6376 §3.4.2), each ending in
	// CRLF, in the order of the signature's h= tag. It holds exactly one From.
	Headers string `json:"headers"`
	// BodyHash is the bh= tag: base64 of SHA-256 of the relaxed canonical body.
	BodyHash string `json:"body_hash"`
}

// DKIMSignResult is the answer of POST /v1/mail/dkim-sign.
type DKIMSignResult struct {
	From       string          `json:"from"`   // the From address the agent holds send on
	Domain     string          `json:"domain"` // d=
	Signatures []DKIMSignature `json:"signatures"`
}

// DKIMSignature is one signature, ready to prepend to the message as
// "DKIM-Signature: " + Header + CRLF (Header is folded with CRLF SP).
type DKIMSignature struct {
	Alg      string `json:"alg"` // ed25519-sha256 or rsa-sha256
	Selector string `json:"selector"`
	Header   string `json:"header"`
}
