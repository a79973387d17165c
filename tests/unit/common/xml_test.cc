// common/xml.h: what the writer produces (escaping, empty elements, attributes) reads back
// the same through the parser, and the parser refuses malformed, oversized and deep input.

#include "common/xml.h"

#include "test_util.h"

namespace strata::xml {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::StatusIs;
using ::testing::HasSubstr;

TEST(XmlWriterTest, EscapesTextAndWritesEmptyElementsOpenAndClosed) {
  Writer x;
  x.Open("Response");
  x.Attribute("xmlns", "http://example/\"q\"");
  x.Text("name", "a<b>&'c\"");
  x.Text("empty", "");
  x.Number("size", uint64_t{1} << 40);
  x.Bool("ok", true);
  const std::string doc = x.Finish();  // Closes Response.
  EXPECT_EQ(doc.rfind("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", 0), 0u) << doc;
  EXPECT_THAT(doc, HasSubstr("<name>a&lt;b&gt;&amp;'c\"</name>"));
  EXPECT_THAT(doc, HasSubstr("<empty></empty>"));
  EXPECT_THAT(doc, HasSubstr("xmlns=\"http://example/&quot;q&quot;\""));
  EXPECT_THAT(doc, HasSubstr("<size>1099511627776</size><ok>true</ok></Response>"));
  absl::StatusOr<Element> back = Parse(doc);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->name, "Response");
  EXPECT_EQ(back->ChildText("name"), "a<b>&'c\"");
  EXPECT_EQ(back->ChildText("empty"), "");
  EXPECT_EQ(back->ChildText("missing"), "");
  EXPECT_EQ(back->Child("missing"), nullptr);
}

TEST(XmlParseTest, KeepsChildrenInOrder) {
  absl::StatusOr<Element> root =
      Parse("<a><item>1</item><b>x</b><item>2</item><item><c>3</c></item></a>");
  ASSERT_THAT(root, IsOk());
  std::vector<const Element*> items = root->Children("item");
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0]->text, "1");
  EXPECT_EQ(items[1]->text, "2");
  EXPECT_EQ(items[2]->ChildText("c"), "3");
  EXPECT_EQ(root->children[1].name, "b");
}

TEST(XmlParseTest, RefusesMalformedDeepAndOversizedDocuments) {
  for (const std::string bad : {"", "no xml", "<a>", "<a></b>", "<a><b></a>", "<a x=1></a>"}) {
    EXPECT_THAT(Parse(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
  std::string deep;
  for (int i = 0; i <= kMaxDepth + 1; ++i) deep += "<d>";
  for (int i = 0; i <= kMaxDepth + 1; ++i) deep += "</d>";
  EXPECT_THAT(Parse(deep), StatusIs(absl::StatusCode::kInvalidArgument));
  std::string big = "<a>" + std::string(kMaxDocumentBytes, 'x') + "</a>";
  EXPECT_THAT(Parse(big), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace strata::xml
