package orderservice

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// callers maps the SHA-256 digest of each API key to its tenant. A lookup
// hashes the presented key first, so that it never compares secrets byte by
// byte, and the keys themselves are not kept.
type callers map[[sha256.Size]byte]string

// maxTenant bounds a tenant's name, in bytes.
const maxTenant = 64

func newCallers(keys map[string]string) (callers, error) {
	if len(keys) == 0 {
		return nil, errors.New("orderservice: APIKeys is empty: at least one API key is needed")
	}
	c := make(callers, len(keys))
	for key, tenant := range keys {
		if !validTenant(tenant) {
			return nil, fmt.Errorf("orderservice: tenant %q: want 1 to %d bytes of text without control characters", tenant, maxTenant)
		}
		if !ValidAPIKey(key) {
			return nil, fmt.Errorf("orderservice: an API key of tenant %q is not 16 to 256 visible ASCII characters", tenant)
		}
		c[sha256.Sum256([]byte(key))] = tenant
	}
	return c, nil
}

func validTenant(t string) bool { return validText(t, maxTenant) }

// ValidAPIKey reports whether key can be an API key: 16 to 256 visible ASCII
// characters (a bearer token is sent as it is, with no escaping).
func ValidAPIKey(key string) bool {
	if len(key) < 16 || len(key) > 256 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// tenant returns the tenant of the request's API key, sent as
// "Authorization: Bearer <key>" (RFC 6750), and whether a key was presented.
func (c callers) tenant(r *http.Request) (tenant string, presented, ok bool) {
	values := r.Header.Values("Authorization")
	if len(values) != 1 {
		return "", len(values) > 1, false
	}
	scheme, key, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", true, false
	}
	key = strings.TrimSpace(key)
	if !ValidAPIKey(key) {
		return "", true, false
	}
	tenant, ok = c[sha256.Sum256([]byte(key))]
	return tenant, true, ok
}

type tenantCtxKey struct{}

// authenticate lets a request with a valid API key through, with its tenant
// in its context, and refuses any other with 401.
func (s *Service) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, presented, ok := s.callers.tenant(r)
		if !ok {
			challenge := `Bearer realm="orders"`
			if presented {
				challenge += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
			problem(w, r, http.StatusUnauthorized, "unauthenticated", "Send a valid API key: Authorization: Bearer <key>.")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tenantCtxKey{}, tenant)))
	})
}

// requestTenant returns the tenant that authenticate found for r. It is the
// idempotency middleware's HTTPConfig.Tenant, so that two tenants' keys never
// meet.
func requestTenant(r *http.Request) string {
	t, _ := r.Context().Value(tenantCtxKey{}).(string)
	return t
}

type requestIDCtxKey struct{}

// withRequestID gives every request an id, in its context and in the
// X-Request-Id response header: the client's own X-Request-Id if it is a
// sane one (1 to 64 letters, digits, '.', '_' or '-'), else a random one.
// Problems carry it, and the logs of a failed request name it.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = randomID()
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDCtxKey{}, id)))
	})
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDCtxKey{}).(string)
	return id
}

// problemDetails is an RFC 9457 problem, with the request id as an extension
// member.
type problemDetails struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	RequestID string `json:"request_id,omitempty"`
}

// problem writes an RFC 9457 problem+json answer. detail must be written for
// the client: never an error from a dependency.
func problem(w http.ResponseWriter, r *http.Request, status int, title, detail string) {
	b, _ := json.Marshal(problemDetails{Type: "about:blank", Title: title, Status: status, Detail: detail, RequestID: requestID(r.Context())})
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// isJSON reports whether a Content-Type is application/json, with no
// parameter but an optional charset=utf-8.
func isJSON(contentType string) bool {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/json" {
		return false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false
		}
	}
	return true
}

// decodeJSON decodes the request body, exactly one JSON value with no field
// that v lacks, into v. Its error is written for the client.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		return errors.New("the body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("the body ends inside its JSON value")
	case errors.As(err, &syntax):
		return fmt.Errorf("the body is not valid JSON (at byte %d)", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Errorf("field %q has the wrong type", typ.Field)
	case errors.As(err, &tooLarge):
		return fmt.Errorf("the body is longer than %d bytes", maxBody)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if len(name) > 66 {
			name = name[:66] + "…"
		}
		return fmt.Errorf("unknown field %s", name)
	default:
		return errors.New("the body cannot be read")
	}
	// One value, then nothing but white space.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("the body has data after its JSON value")
	}
	return nil
}

// idempotencyKey returns the request's Idempotency-Key as the idempotency
// middleware reads it (which has checked it): bare, or a quoted string
// unescaped.
func idempotencyKey(r *http.Request) string {
	v := strings.Trim(r.Header.Get("Idempotency-Key"), " \t")
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(v[1 : len(v)-1])
	}
	return v
}

// matchETag evaluates the field values of If-Match (strong = true) or
// If-None-Match (strong = false) against current, a strong entity tag, as
// RFC 9110 §13.1.1 and §13.1.2 say: "*" matches any current representation;
// otherwise the field is a comma-separated list of entity tags, and it
// matches when any of them does, under the strong comparison for If-Match (a
// weak tag never matches) and the weak one for If-None-Match (W/"x" matches
// "x"). Empty list elements are ignored. It returns an error for a field
// that is not a valid list of entity tags. An empty list matches nothing.
func matchETag(values []string, current string, strong bool) (bool, error) {
	field := strings.Join(values, ",")
	if strings.Trim(field, " \t") == "*" {
		return true, nil
	}
	match := false
	rest := field
	for {
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" {
			break
		}
		if rest[0] == ',' { // an empty element
			rest = rest[1:]
			continue
		}
		weak := strings.HasPrefix(rest, "W/")
		if weak {
			rest = rest[2:]
		}
		if rest == "" || rest[0] != '"' {
			return false, errors.New("want * or a list of entity tags, such as \"v1\", W/\"v2\"")
		}
		end := 1
		for end < len(rest) && rest[end] != '"' {
			if c := rest[end]; c < 0x21 || c == 0x7f { // etagc = %x21 / %x23-7E / obs-text
				return false, errors.New("an entity tag holds a character it may not")
			}
			end++
		}
		if end == len(rest) {
			return false, errors.New("an entity tag has no closing quote")
		}
		tag := rest[:end+1]
		rest = strings.TrimLeft(rest[end+1:], " \t")
		if rest != "" && rest[0] != ',' {
			return false, errors.New("entity tags must be separated by commas")
		}
		if tag == current && !(strong && weak) {
			match = true
		}
	}
	return match, nil
}
