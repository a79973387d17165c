#pragma once
// XML for every part that speaks it, on pugixml: EC2 Query responses (api/), the image bundle's
// manifest (engine/image), and the CLI's reading of API replies (tools/). One writer and one
// reader, so escaping and limits are the same everywhere.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace pugi {
class xml_document;
class xml_node;
}  // namespace pugi

namespace strata::xml {

// Builds a document element by element, then serializes it without indentation, with the XML
// declaration, and with empty elements as <a></a>. Thread-compatible.
class Writer {
 public:
  Writer();
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Opens element `name` inside the open one (at the top when none is open).
  void Open(absl::string_view name);
  // Sets an attribute of the element opened last. REQUIRES: an element is open.
  void Attribute(absl::string_view name, absl::string_view value);
  // Closes the element opened last.
  void Close();
  // <name>text</name>, escaped.
  void Text(absl::string_view name, absl::string_view text);
  template <typename T>
  void Number(absl::string_view name, T value) {
    Text(name, absl::StrCat(value));
  }
  void Bool(absl::string_view name, bool value) { Text(name, value ? "true" : "false"); }
  // Closes what is open and returns the document.
  std::string Finish();

 private:
  std::unique_ptr<pugi::xml_document> doc_;
  std::vector<pugi::xml_node> open_;
};

// One element of a parsed document: its name, its text (unescaped, of its direct text nodes)
// and its child elements in order.
struct Element {
  std::string name;
  std::string text;
  std::vector<Element> children;

  // The first child element named `name`, or nullptr.
  const Element* Child(absl::string_view name) const;
  // The text of the first child named `name`; empty when there is none.
  std::string ChildText(absl::string_view name) const;
  // Every child element named `name`, in order.
  std::vector<const Element*> Children(absl::string_view name) const;
};

// Limits on what Parse accepts.
inline constexpr size_t kMaxDocumentBytes = 16 << 20;
inline constexpr int kMaxDepth = 32;

// Parses a whole document into its root element. kInvalidArgument for malformed XML, a
// document over kMaxDocumentBytes or nested deeper than kMaxDepth.
[[nodiscard]] absl::StatusOr<Element> Parse(absl::string_view text);

}  // namespace strata::xml
