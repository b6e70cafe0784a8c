// Consent: the stored opt-out / opt-in choice, DNT and GPC (when respectDnt), require-consent mode.
// The choice itself is stored even in cookieless mode: it is the user's explicit request.
import { N, opt } from './config.js'
import { kv } from './store.js'

const KEY = 'tm_consent' // localStorage: 1 opted in, 0 opted out
export let choice = kv(KEY, undefined, 1)

export const dnt = () => N.doNotTrack == 1 || N.globalPrivacyControl

// nothing may be sent or stored
export const blocked = () => choice == 0 || (choice != 1 && (opt('requireConsent') || (opt('respectDnt') && dnt())))

// may ids and the retry queue be persisted?
export const canStore = () => !opt('cookieless') && !blocked()

export const setConsent = (c) => {
  choice = c
  kv(KEY, c, 1)
}
