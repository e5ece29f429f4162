package authz

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the CheckRequest fields authz reads
// (envoy/service/auth/v3/{external_auth,attribute_context}.proto,
// envoy/config/core/v3/base.proto).
const (
	fieldCheckAttributes  protowire.Number = 1  // CheckRequest.attributes
	fieldAttrRequest      protowire.Number = 4  // AttributeContext.request
	fieldRequestHTTP      protowire.Number = 2  // AttributeContext.Request.http
	fieldHTTPMethod       protowire.Number = 2  // HttpRequest.method
	fieldHTTPHeaders      protowire.Number = 3  // HttpRequest.headers (map<string,string>)
	fieldHTTPPath         protowire.Number = 4  // HttpRequest.path
	fieldHTTPHeaderMap    protowire.Number = 13 // HttpRequest.header_map
	fieldHeaderMapHeaders protowire.Number = 1  // HeaderMap.headers (repeated HeaderValue)
	fieldHeaderKey        protowire.Number = 1  // HeaderValue.key, and a map entry's key
	fieldHeaderValue      protowire.Number = 2  // HeaderValue.value, and a map entry's value
	fieldHeaderRawValue   protowire.Number = 3  // HeaderValue.raw_value
)

// wireCheckRequest is what authz reads of a CheckRequest — method, path
// and the Authorization header — decoded straight from its wire bytes by
// the gRPC server (checkCodec): decoding the whole message into
// authv3.CheckRequest was the largest part of authz's own CPU under load
// (every attribute, address and header becomes an object: 50–70
// allocations per Check, and the garbage collector's work with them).
//
// decode gives exactly what ParseCheckRequest reads from the same bytes
// decoded by proto.Unmarshal (FuzzWireCheckRequest holds it to that):
// the last value of a repeated scalar wins, repeated messages merge, the
// last entry of a repeated map key wins, a field with an unexpected wire
// type is skipped as an unknown field, and a string it reads must be valid
// UTF-8. Fields it does not read are skipped without validation.
type wireCheckRequest struct {
	method, path []byte
	// mapAuth is headers["authorization"] (mapHasAuth: the key is present).
	mapAuth    []byte
	mapHasAuth bool
	// rawAuth joins, with ",", the values of header_map entries named
	// authorization in any case (rawHasAuth: there was one).
	rawAuth    []byte
	rawHasAuth bool
}

// request is the decoded request, as ParseCheckRequest would parse it.
func (w *wireCheckRequest) request() Request {
	auth := w.rawAuth
	if w.mapHasAuth {
		auth = w.mapAuth
	}
	return NewRequest(string(w.method), string(w.path), string(auth))
}

var errWire = errors.New("malformed CheckRequest")

// decode reads a CheckRequest's wire bytes into w (merging, as
// proto.Unmarshal merges into a message). The decoded values are copied:
// b may be reused after.
func (w *wireCheckRequest) decode(b []byte) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num == fieldCheckAttributes && typ == protowire.BytesType {
			return walk(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num == fieldAttrRequest && typ == protowire.BytesType {
					return walk(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
						if num == fieldRequestHTTP && typ == protowire.BytesType {
							return w.decodeHTTP(v)
						}
						return nil
					})
				}
				return nil
			})
		}
		return nil
	})
}

func (w *wireCheckRequest) decodeHTTP(b []byte) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fieldHTTPMethod:
			return setString(&w.method, v)
		case fieldHTTPPath:
			return setString(&w.path, v)
		case fieldHTTPHeaders:
			key, value, _, err := keyValue(v, "headers entry")
			if err == nil && string(key) == "authorization" {
				w.mapAuth, w.mapHasAuth = append(w.mapAuth[:0], value...), true
			}
			return err
		case fieldHTTPHeaderMap:
			return walk(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				if num == fieldHeaderMapHeaders && typ == protowire.BytesType {
					return w.decodeHeaderValue(v)
				}
				return nil
			})
		}
		return nil
	})
}

// decodeHeaderValue reads one header_map entry; header() uses its value,
// or its raw_value when the value is empty.
func (w *wireCheckRequest) decodeHeaderValue(b []byte) error {
	key, value, raw, err := keyValue(b, "header_map entry")
	if err != nil || !strings.EqualFold(string(key), "authorization") {
		return err
	}
	if len(value) == 0 {
		value = raw
	}
	if w.rawHasAuth {
		w.rawAuth = append(w.rawAuth, ',')
	}
	w.rawAuth, w.rawHasAuth = append(w.rawAuth, value...), true
	return nil
}

// keyValue reads a map<string,string> entry or a HeaderValue: the strings
// key (1) and value (2), which must be valid UTF-8, and raw_value (3,
// bytes; a map entry has none). The last of a repeated field wins.
func keyValue(b []byte, what string) (key, value, raw []byte, err error) {
	err = walk(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fieldHeaderKey, fieldHeaderValue:
			if !utf8.Valid(v) {
				return fmt.Errorf("%w: %s is not valid UTF-8", errWire, what)
			}
			if num == fieldHeaderKey {
				key = v
			} else {
				value = v
			}
		case fieldHeaderRawValue:
			raw = v
		}
		return nil
	})
	return key, value, raw, err
}

func setString(dst *[]byte, v []byte) error {
	if !utf8.Valid(v) {
		return fmt.Errorf("%w: string field is not valid UTF-8", errWire)
	}
	*dst = append((*dst)[:0], v...)
	return nil
}

// walk calls f for every field of one message's bytes, in order. v is the
// field's contents for length-delimited fields and nil otherwise (the
// callers read only length-delimited fields).
func walk(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errWire, protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: %v", errWire, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, typ, v); err != nil {
			return err
		}
	}
	return nil
}
