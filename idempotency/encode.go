package idempotency

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
)

// The stored encoding of results is public, so that an operation that
// completes its key inside its own transaction (see Lease) stores what Do and
// the middleware replay exactly as if the Engine had stored it. Every value
// starts with a kind byte:
//
//	'v' JSON           a result of Do (EncodeResult)
//	'e' message        an error of Do kept for replay (EncodeError)
//	'h' response       a response of the middleware (EncodeResponse)
//
// A response is a flags byte (1: the body was too long to keep and is
// replayed empty), the status as a big-endian uint16, the number of header
// fields as a uvarint, each field's name and value as a uvarint length and
// the bytes, then the body.
const (
	kindValue    byte = 'v' // JSON of Do's result follows
	kindError    byte = 'e' // the message of Do's cached error follows
	kindResponse byte = 'h' // the middleware's encoded response follows
)

// EncodeResult returns v in the form in which Do stores a successful result:
// a duplicate's Do decodes it into its T with encoding/json. It returns
// json.Marshal's error.
func EncodeResult(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("idempotency: encode result: %w", err)
	}
	return append(append(make([]byte, 0, 1+len(b)), kindValue), b...), nil
}

// EncodeError returns err in the form in which Do stores a final error: a
// duplicate's Do gets a *ReplayedError with err's message, marked
// bulwark.Permanent. err must not be nil.
func EncodeError(err error) []byte {
	msg := err.Error()
	return append(append(make([]byte, 0, 1+len(msg)), kindError), msg...)
}

// EncodeResponse returns an HTTP response in the form in which the
// middleware stores it: a duplicate gets status, every field of header (in
// the order of their names) and body, with "Idempotent-Replayed: true". Pass
// only the header fields a replay should carry, as HTTPConfig.ReplayHeaders
// does for responses the middleware records itself. It returns an error if
// status is outside 200 to 999, which a replay could not send.
func EncodeResponse(status int, header http.Header, body []byte) ([]byte, error) {
	if status < 200 || status > 999 {
		return nil, fmt.Errorf("idempotency: encode response: status %d is outside 200-999", status)
	}
	names := make([]string, 0, len(header))
	size := 16 + len(body)
	for name, vs := range header {
		names = append(names, name)
		for _, v := range vs {
			size += 2*binary.MaxVarintLen64 + len(name) + len(v)
		}
	}
	slices.Sort(names)
	b := appendResponseHead(make([]byte, 0, size), status, header, names)
	return append(b, body...), nil
}

// appendResponseHead appends the kind, a zero flags byte, the status and the
// fields of h named in names, in that order.
func appendResponseHead(b []byte, status int, h http.Header, names []string) []byte {
	n := 0
	for _, name := range names {
		n += len(h[name])
	}
	b = append(b, kindResponse, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(status))
	b = binary.AppendUvarint(b, uint64(n))
	for _, name := range names {
		for _, v := range h[name] {
			b = binary.AppendUvarint(b, uint64(len(name)))
			b = append(b, name...)
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	return b
}
