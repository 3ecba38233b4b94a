package agent

import "encoding/json"

// strictKeywords are the JSON Schema keywords OpenAI's strict structured
// outputs accept; a schema using others is refused by the API.
var strictKeywords = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true, "items": true,
	"enum": true, "const": true, "anyOf": true, "description": true, "title": true, "$defs": true,
	"definitions": true, "$ref": true, "pattern": true, "format": true, "minimum": true, "maximum": true,
	"exclusiveMinimum": true, "exclusiveMaximum": true, "multipleOf": true, "minItems": true, "maxItems": true,
	"$schema": true,
}

// strictSchema reports a schema OpenAI's strict mode takes as it is: only
// the keywords it knows, and every object closed (additionalProperties
// false) with all of its properties required.
func strictSchema(raw json.RawMessage) bool {
	var root map[string]any
	if json.Unmarshal(raw, &root) != nil || root["type"] != "object" {
		return false // the API wants an object at the root
	}
	return strictNode(root)
}

func strictNode(node map[string]any) bool {
	for k := range node {
		if !strictKeywords[k] {
			return false
		}
	}
	if props, ok := node["properties"].(map[string]any); ok || node["type"] == "object" {
		if node["additionalProperties"] != false {
			return false
		}
		required := map[string]bool{}
		list, _ := node["required"].([]any)
		for _, r := range list {
			if name, ok := r.(string); ok {
				required[name] = true
			}
		}
		for name, sub := range props {
			child, ok := sub.(map[string]any)
			if !required[name] || !ok || !strictNode(child) {
				return false
			}
		}
	}
	if items, ok := node["items"].(map[string]any); ok && !strictNode(items) {
		return false
	}
	for _, key := range []string{"$defs", "definitions"} {
		defs, _ := node[key].(map[string]any)
		for _, sub := range defs {
			if child, ok := sub.(map[string]any); !ok || !strictNode(child) {
				return false
			}
		}
	}
	anyOf, _ := node["anyOf"].([]any)
	for _, sub := range anyOf {
		if child, ok := sub.(map[string]any); !ok || !strictNode(child) {
			return false
		}
	}
	return true
}
