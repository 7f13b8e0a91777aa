export interface BaseLibrary {
  /** The base library version, e.g. '3.4.1' ('0.0.0' if the runtime does not say). */
  version: string
  /** 2.21.2+: the phone-number button gives a `code` the gateway redeems at WeChat (phone-code flow). */
  phoneCode: boolean
  /** 1.2.0+: the phone-number button exists and gives `encryptedData` and `iv`. */
  encryptedPhone: boolean
  /** Below 1.9.1: WeChat masks the number in the encrypted data (138****5743); the gateway refuses it. */
  maskedPhone: boolean
}

/** Compares dotted versions numerically ('2.9.10' < '2.21.2'), -1, 0 or 1. */
export function compareVersions(a: string, b: string): number {
  const x = a.split('.')
  const y = b.split('.')
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const p = parseInt(x[i] || '0', 10) || 0
    const q = parseInt(y[i] || '0', 10) || 0
    if (p !== q) return p < q ? -1 : 1
  }
  return 0
}

export function baseLibrary(): BaseLibrary {
  const version = sdkVersion()
  return {
    version,
    phoneCode: compareVersions(version, '2.21.2') >= 0,
    encryptedPhone: compareVersions(version, '1.2.0') >= 0,
    maskedPhone: compareVersions(version, '1.9.1') < 0,
  }
}

function sdkVersion(): string {
  try {
    // getAppBaseInfo exists from 2.20.1 on; before that only the deprecated getSystemInfoSync says.
    if (typeof wx.getAppBaseInfo === 'function') {
      const version = wx.getAppBaseInfo().SDKVersion
      if (version) return version
    }
    return wx.getSystemInfoSync().SDKVersion || '0.0.0'
  } catch (e) {
    return '0.0.0'
  }
}

export interface PromptUpdateOptions {
  /** The dialog's title. Default '更新提示' ("Update"). */
  title?: string
  /** The dialog's text. Default '新版本已经准备好，是否重启应用？' ("A new version is ready. Restart now?"). */
  content?: string
  /** The confirm button's text (WeChat's default when unset). */
  confirmText?: string
  /** The cancel button's text (WeChat's default when unset). */
  cancelText?: string
  /** true: no cancel button, for a version the user must not stay on. Default false. */
  force?: boolean
}

/**
 * Waits for WeChat's update check of this launch; when a new version has been downloaded, asks the
 * user with wx.showModal and applies it (the mini program restarts) if they confirm.
 * Resolves to true when applyUpdate() was called, false when there is no update, the download
 * failed, the user declined, or the runtime has no update manager. Never rejects.
 */
export function promptUpdate(options: PromptUpdateOptions = {}): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    if (typeof wx.getUpdateManager !== 'function') return resolve(false)
    let manager: WechatMiniprogram.UpdateManager
    try {
      manager = wx.getUpdateManager()
    } catch (e) {
      return resolve(false)
    }
    manager.onCheckForUpdate((res) => {
      if (!res.hasUpdate) resolve(false)
    })
    manager.onUpdateFailed(() => resolve(false))
    manager.onUpdateReady(() => {
      const modal: WechatMiniprogram.ShowModalOption = {
        title: options.title === undefined ? '更新提示' : options.title,
        content: options.content === undefined ? '新版本已经准备好，是否重启应用？' : options.content,
        showCancel: !options.force,
        success: (res) => {
          if (!res.confirm) return resolve(false)
          resolve(true)
          manager.applyUpdate()
        },
        fail: () => resolve(false),
      }
      if (options.confirmText !== undefined) modal.confirmText = options.confirmText
      if (options.cancelText !== undefined) modal.cancelText = options.cancelText
      wx.showModal(modal)
    })
  })
}
