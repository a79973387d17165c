#pragma once
// A minimal XML writer for EC2 Query responses: nested elements with escaped text.

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace strata::api {

class XmlWriter {
 public:
  void Open(absl::string_view name, absl::string_view attributes = "") {
    absl::StrAppend(&out_, "<", name, attributes.empty() ? "" : " ", attributes, ">");
    stack_.emplace_back(name);
  }
  void Close() {
    absl::StrAppend(&out_, "</", stack_.back(), ">");
    stack_.pop_back();
  }
  // <name>escaped text</name>
  void Text(absl::string_view name, absl::string_view text) {
    absl::StrAppend(&out_, "<", name, ">", Escape(text), "</", name, ">");
  }
  template <typename T>
  void Number(absl::string_view name, T value) {
    absl::StrAppend(&out_, "<", name, ">", value, "</", name, ">");
  }
  void Bool(absl::string_view name, bool value) { Text(name, value ? "true" : "false"); }
  std::string Finish() {
    while (!stack_.empty()) Close();
    return std::move(out_);
  }

  static std::string Escape(absl::string_view s) {
    std::string out;
    for (char c : s) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&quot;";
          break;
        case '\'':
          out += "&apos;";
          break;
        default:
          out.push_back(c);
      }
    }
    return out;
  }

 private:
  std::string out_ = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
  std::vector<std::string> stack_;
};

}  // namespace strata::api
