// The demo shop's instrumentation: plain Segment calls (analytics.page/track/identify), as a
// retailer's site already makes them. Only the destination differs: the collector this page
// came from (apiHost), with the write key from ?key=… (default: the dev key).
(function () {
  var writeKey = new URLSearchParams(location.search).get("key") || "dev-key";
  var protocol = location.protocol.replace(":", "");
  var segmentio = { apiKey: writeKey, apiHost: location.host + "/v1", protocol: protocol };
  var analytics = AnalyticsNext.AnalyticsBrowser.load(
    { writeKey: writeKey, cdnSettings: { integrations: { "Segment.io": segmentio } } },
    { integrations: { "Segment.io": segmentio } }
  );
  window.analytics = analytics;
  var product = { product_id: "lamp-red-1", price: 39.9, currency: "EUR" };
  function on(id, fn) { document.getElementById(id).addEventListener("click", fn); }
  on("login", function () {
    analytics.identify("shopper-" + document.getElementById("email").value.length,
                       { email: document.getElementById("email").value });
  });
  on("search", function () {
    analytics.track("Products Searched", { query: document.getElementById("query").value });
  });
  on("product", function () { analytics.track("Product Viewed", product); });
  on("add", function () { analytics.track("Product Added", product); });
  on("checkout", function () { analytics.track("Checkout Started", { revenue: 39.9, currency: "EUR" }); });
  on("pay", function () { analytics.track("Element Clicked", { element: "#pay" }); });
  analytics.page("Home").then(function () {
    return analytics.user();
  }).then(function (user) {
    window.cemAnonymousId = user.anonymousId();
    document.getElementById("status").textContent = "ready";
  });
})();
