const { WxgateError } = require('wxgate-miniprogram')
const gw = require('../../gateway')

Page({
  data: { phone: '', masked: '', error: '' },

  async onLoad() {
    try {
      await gw.login() // shares the login App.onLaunch started: one wx.login in all
      /** @type {import('wxgate-miniprogram').SessionInfo} */
      const session = await gw.request({ path: '/session' })
      // Each number WeChat hands out is paid for: do not show the button to a user who gave it.
      if (session.phone) this.setData({ masked: session.phone.masked })
    } catch (err) {
      this.showError(err)
    }
  },

  /** @param {WechatMiniprogram.ButtonGetPhoneNumber} event */
  async onPhone(event) {
    // No wx.login here: it could replace the session_key the event's data is encrypted with.
    try {
      const { phoneNumber } = await gw.phone(event)
      this.setData({ phone: phoneNumber, error: '' })
    } catch (err) {
      if (err instanceof WxgateError && err.code === 'user_denied') return // they said no: leave it
      this.showError(err)
    }
  },

  /** @param {unknown} err */
  showError(err) {
    if (!(err instanceof WxgateError)) throw err
    if (err.code === 'phone_masked') gw.promptUpdate({ force: true })
    this.setData({ error: err.hint || err.message })
  },
})
