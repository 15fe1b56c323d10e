// Package strictjson decodes JSON objects from clients, the bus and the
// server API strictly, with errors that name the field at fault in the
// JSON's terms (never a Go type's).
package strictjson

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Decode decodes the JSON object data into v strictly: keys match
// exactly (encoding/json matches them regardless of case), an unknown key,
// a key given twice, a value of the wrong type, invalid UTF-8 or anything
// after the object is an error naming what is wrong. A request never gets
// a second meaning.
func Decode(data []byte, v any) error {
	err := jsonv2.Unmarshal(data, v, jsonv2.RejectUnknownMembers(true))
	if err == nil {
		return nil
	}
	var se *jsonv2.SemanticError
	if errors.As(err, &se) {
		field := strings.TrimPrefix(string(se.JSONPointer), "/")
		switch {
		case se.Err != nil && strings.Contains(se.Err.Error(), "unknown object member"):
			return fmt.Errorf("unknown field %q", field)
		case field == "":
			return fmt.Errorf("want a JSON object, got %s", kindName(se.JSONKind))
		case se.GoType != nil && se.Err != nil:
			return fmt.Errorf("field %q: %s does not fit %s: %v", field, kindName(se.JSONKind), wantName(se.GoType), se.Err)
		case se.GoType != nil:
			return fmt.Errorf("field %q: want %s, got %s", field, wantName(se.GoType), kindName(se.JSONKind))
		}
		return fmt.Errorf("field %q: %v", field, se.Err)
	}
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) {
		if syn.JSONPointer != "" {
			return fmt.Errorf("malformed JSON at byte %d (field %q): %v", syn.ByteOffset, strings.TrimPrefix(string(syn.JSONPointer), "/"), syn.Err)
		}
		return fmt.Errorf("malformed JSON at byte %d: %v", syn.ByteOffset, syn.Err)
	}
	return err
}

// wantName names what a Go type takes, in JSON's terms: a field's Go type
// (a struct of the server's, say) is not the client's business.
func wantName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer of 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "another value"
}

// kindName names a JSON kind for an error message.
func kindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 'f', 't':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return "an invalid value"
}
