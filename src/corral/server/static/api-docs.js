// Starts Swagger UI on /api/docs. A file rather than an inline script: the Content-Security-Policy
// allows scripts from this server only.
(function () {
  "use strict";
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
})();
