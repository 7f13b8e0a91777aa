const gw = require('./gateway')

App({
  onLaunch() {
    // Users on an old version keep old bugs (and an old base library floor): offer the update.
    gw.promptUpdate()
    // Log in now, long before any tap: the phone button's data is encrypted with this session's key.
    gw.login().catch(() => {}) // the page logs in again and shows the error
  },
})
