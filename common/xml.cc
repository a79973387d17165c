#include "common/xml.h"

#include <sstream>

#include "pugixml.hpp"

namespace strata::xml {
namespace {

// Copies `node` into `out`; false when it nests deeper than kMaxDepth.
bool Copy(const pugi::xml_node& node, Element& out, int depth) {
  if (depth > kMaxDepth) return false;
  out.name = node.name();
  for (pugi::xml_node child = node.first_child(); child; child = child.next_sibling()) {
    if (child.type() == pugi::node_pcdata || child.type() == pugi::node_cdata) {
      out.text += child.value();
    } else if (child.type() == pugi::node_element) {
      out.children.emplace_back();
      if (!Copy(child, out.children.back(), depth + 1)) return false;
    }
  }
  return true;
}

}  // namespace

Writer::Writer() : doc_(std::make_unique<pugi::xml_document>()) {
  pugi::xml_node decl = doc_->append_child(pugi::node_declaration);
  decl.append_attribute("version") = "1.0";
  decl.append_attribute("encoding") = "UTF-8";
}

Writer::~Writer() = default;

void Writer::Open(absl::string_view name) {
  pugi::xml_node parent = open_.empty() ? static_cast<pugi::xml_node>(*doc_) : open_.back();
  open_.push_back(parent.append_child(std::string(name).c_str()));
}

void Writer::Attribute(absl::string_view name, absl::string_view value) {
  open_.back().append_attribute(std::string(name).c_str()) = std::string(value).c_str();
}

void Writer::Close() { open_.pop_back(); }

void Writer::Text(absl::string_view name, absl::string_view text) {
  Open(name);
  open_.back().append_child(pugi::node_pcdata).set_value(std::string(text).c_str());
  Close();
}

std::string Writer::Finish() {
  open_.clear();
  std::ostringstream out;
  doc_->save(out, "", pugi::format_raw | pugi::format_no_empty_element_tags, pugi::encoding_utf8);
  return out.str();
}

const Element* Element::Child(absl::string_view child_name) const {
  for (const Element& c : children) {
    if (c.name == child_name) return &c;
  }
  return nullptr;
}

std::string Element::ChildText(absl::string_view child_name) const {
  const Element* c = Child(child_name);
  return c == nullptr ? std::string() : c->text;
}

std::vector<const Element*> Element::Children(absl::string_view child_name) const {
  std::vector<const Element*> out;
  for (const Element& c : children) {
    if (c.name == child_name) out.push_back(&c);
  }
  return out;
}

absl::StatusOr<Element> Parse(absl::string_view text) {
  if (text.size() > kMaxDocumentBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("XML document of ", text.size(), " bytes (at most ", kMaxDocumentBytes, ")"));
  }
  pugi::xml_document doc;
  const pugi::xml_parse_result parsed =
      doc.load_buffer(text.data(), text.size(), pugi::parse_default, pugi::encoding_utf8);
  if (!parsed) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed XML at byte ", parsed.offset, ": ", parsed.description()));
  }
  const pugi::xml_node root = doc.document_element();
  if (!root) return absl::InvalidArgumentError("XML document without an element");
  Element out;
  if (!Copy(root, out, 0)) {
    return absl::InvalidArgumentError(absl::StrCat("XML nested deeper than ", kMaxDepth));
  }
  return out;
}

}  // namespace strata::xml
